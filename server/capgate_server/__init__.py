"""capgate server: the gRPC services over the store, one replica of a fleet.

``CapgateServer`` puts a store, the live replica state and the gRPC server
together; ``serve`` runs one until SIGTERM, ``serve_workers`` runs N worker
processes on one address under one supervisor (``WorkerPool``). The storage interface and its two
backends are in ``capgate_server.store``.
"""

from capgate_server._app import CLOCK_HEALTH, WORKERS_HEALTH, CapgateServer, serve
from capgate_server._audit import AuditLog
from capgate_server._credentials import recover_admin
from capgate_server._interceptor import POLICY
from capgate_server._keyring import KeyEncryptionKey, load_kek, new_kek_text
from capgate_server._limits import ResourceLimits
from capgate_server._replica import Replica, Settings
from capgate_server._status import ERROR_METADATA_KEY, status_for
from capgate_server._workers import WorkerPool, serve_workers, usable_cores

__all__ = [
    "CLOCK_HEALTH",
    "ERROR_METADATA_KEY",
    "POLICY",
    "WORKERS_HEALTH",
    "AuditLog",
    "CapgateServer",
    "KeyEncryptionKey",
    "Replica",
    "ResourceLimits",
    "Settings",
    "WorkerPool",
    "load_kek",
    "new_kek_text",
    "recover_admin",
    "serve",
    "serve_workers",
    "status_for",
    "usable_cores",
]
