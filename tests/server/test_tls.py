"""TLS and mutual TLS between clients and the server; no plaintext off loopback."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from capgate import InvalidArgumentError, UnavailableError
from capgate_client import TLS, Client

from harness import ServerThread, cli


def _cert(subject: str, issuer_key, issuer_name, key, *, ca=False, client=False):
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        usage = x509.oid.ExtendedKeyUsageOID
        b = b.add_extension(
            x509.ExtendedKeyUsage([usage.CLIENT_AUTH if client else usage.SERVER_AUTH]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capgate test CA")])
    ca = _cert("capgate test CA", ca_key, ca_name, ca_key, ca=True)
    files = {}
    for name, client in (("server", False), ("client", True)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(name, ca_key, ca_name, key, client=client)
        files[f"{name}.key"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        files[f"{name}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
    files["ca.crt"] = ca.public_bytes(serialization.Encoding.PEM)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


@pytest.fixture
def tls_server(tmp_path, pki):
    s = ServerThread(
        tmp_path / "data", tls_cert=pki / "server.crt", tls_key=pki / "server.key"
    ).start()
    yield s
    s.stop()


@pytest.fixture
def mtls_server(tmp_path, pki):
    s = ServerThread(
        tmp_path / "data",
        tls_cert=pki / "server.crt",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.crt",
    ).start()
    yield s
    s.stop()


def test_tls_handshake_and_plaintext_refused(tls_server, pki):
    with tls_server.client(tls=TLS(ca=pki / "ca.crt")) as c:
        assert c.list_agents() == []
    with tls_server.client(timeout=3) as plain, pytest.raises(UnavailableError):
        plain.list_agents()
    with tls_server.client(tls=TLS(), timeout=3) as untrusting, pytest.raises(UnavailableError):
        untrusting.list_agents()  # the system roots do not know this CA


def test_mutual_tls_requires_a_client_certificate(mtls_server, pki):
    mtls = TLS(ca=pki / "ca.crt", cert=pki / "client.crt", key=pki / "client.key")
    with mtls_server.client(tls=mtls) as c:
        assert c.list_agents() == []
    with mtls_server.client(tls=TLS(ca=pki / "ca.crt"), timeout=3) as no_cert:
        with pytest.raises(UnavailableError):
            no_cert.list_agents()


def test_cli_speaks_tls(mtls_server, pki):
    r = cli(
        "--json",
        "--tls-ca",
        str(pki / "ca.crt"),
        "--tls-cert",
        str(pki / "client.crt"),
        "--tls-key",
        str(pki / "client.key"),
        "agent",
        "list",
        server=mtls_server.address,
        credential=mtls_server.admin_credential,
    )
    assert r.returncode == 0, r.stderr
    r = cli(
        "--tls-ca",
        str(pki / "ca.crt"),
        "agent",
        "list",
        "--timeout",
        "3",
        server=mtls_server.address,
        credential=mtls_server.admin_credential,
    )
    assert r.returncode == 2


def test_no_plaintext_off_loopback(tmp_path):
    s = ServerThread(tmp_path / "data")
    s.settings.listen = "0.0.0.0:0"
    s._thread.start()
    from capgate_server import CapgateServer

    app = CapgateServer(s.settings)
    with pytest.raises(InvalidArgumentError, match="without TLS"):
        s.run(app.start())
    s.settings.insecure = True
    s.app = CapgateServer(s.settings)
    s.run(s.app.start())
    try:
        with Client(f"127.0.0.1:{s.app.port}", s.admin_credential) as c:
            assert c.list_agents() == []
    finally:
        s.stop()
