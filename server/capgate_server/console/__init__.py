"""The operator console: a small web UI served by the server process itself.

``capgate serve --console-listen 127.0.0.1:8080`` starts it beside the gRPC
API (off by default). It shows agents, their ceilings, live tokens and
delegation trees, the decisions being made and the approvals waiting, and acts
on them (suspend, resume, narrow a ceiling, revoke a token or a hop, approve or
deny) through the same service layer as the API, as the logged-in principal.
The page is plain HTML, CSS and JavaScript shipped in the package: nothing to
build. The security model is in ``Console``'s docstring and docs/console.md.
"""

from capgate_server.console._console import CONSOLE_ROLES, COOKIE, Console
from capgate_server.console._sessions import IDLE, LIFETIME, Sessions

__all__ = ["CONSOLE_ROLES", "COOKIE", "IDLE", "LIFETIME", "Console", "Sessions"]
