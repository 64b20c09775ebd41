"""The federation's private CA, the aggregator's certificate, and real handshakes on loopback."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from crypto.tls import (
    SERVER_VALIDITY,
    client_ssl_context,
    generate_ca,
    issue_server_certificate,
    server_ssl_context,
)

HOSTS = ["127.0.0.1", "::1", "localhost", "agg.example.org"]


def _write_pki(folder: Path, hosts: list[str] = HOSTS) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = generate_ca("test CA")
    cert, key = issue_server_certificate(ca_cert, ca_key, "aggregator", hosts)
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca_cert)
    paths["cert"].write_bytes(cert)
    paths["key"].write_bytes(key)
    return paths


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> tuple[bytes, str]:
    """One TLS connection over 127.0.0.1; returns what the server sent and the TLS version."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")
        except OSError:  # ssl.SSLError is an OSError: the client refused us, as it should
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname()[:2], timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname=hostname) as tls:
            received = b""
            while len(received) < 5:
                chunk = tls.recv(5 - len(received))
                if not chunk:
                    break
                received += chunk
            return received, str(tls.version())
    finally:
        thread.join(10)
        listener.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _write_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost"])
def test_handshake_succeeds_against_the_federation_ca(pki: dict[str, Path], hostname: str) -> None:
    server = server_ssl_context(pki["cert"], pki["key"])
    client = client_ssl_context(pki["ca"])
    received, version = handshake(server, client, hostname)
    assert received == b"hello"
    assert version in ("TLSv1.2", "TLSv1.3")


def test_a_certificate_from_another_ca_is_refused(pki: dict[str, Path], tmp_path: Path) -> None:
    other = _write_pki(tmp_path / "other")
    server = server_ssl_context(other["cert"], other["key"])  # right names, wrong issuer
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client_ssl_context(pki["ca"]), "localhost")


@pytest.mark.parametrize("hostname", ["evil.example.org", "127.0.0.2", "example.org"])
def test_a_wrong_hostname_is_refused(pki: dict[str, Path], hostname: str) -> None:
    server = server_ssl_context(pki["cert"], pki["key"])
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client_ssl_context(pki["ca"]), hostname)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_the_server_refuses_tls_below_1_2(pki: dict[str, Path]) -> None:
    client = client_ssl_context(pki["ca"])
    client.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    client.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        handshake(server_ssl_context(pki["cert"], pki["key"]), client, "localhost")


def test_contexts_are_hardened(pki: dict[str, Path]) -> None:
    server = server_ssl_context(pki["cert"], pki["key"])
    client = client_ssl_context(pki["ca"])
    for context in (server, client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.options & ssl.OP_NO_COMPRESSION
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    # the federation CA and nothing else: no system store
    assert len(client.get_ca_certs()) == 1


def test_server_certificate_fields(pki: dict[str, Path]) -> None:
    cert = x509.load_pem_x509_certificate(pki["cert"].read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "agg.example.org"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                        ipaddress.ip_address("::1")]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature and not key_usage.key_cert_sign
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(lifetime - SERVER_VALIDITY) < datetime.timedelta(hours=2)


def test_ca_certificate_fields(pki: dict[str, Path]) -> None:
    ca = x509.load_pem_x509_certificate(pki["ca"].read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_hosts_are_kept_deduplicated_and_bracketed_ipv6_accepted() -> None:
    ca_cert, ca_key = generate_ca("ca")
    cert_pem, _ = issue_server_certificate(ca_cert, ca_key, "x",
                                           ["[::1]", "::1", "Host.Example", "host.example"])
    sans = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    assert sans.get_values_for_type(x509.DNSName) == ["host.example"]


@pytest.mark.parametrize("hosts", [[], ["not a host"], ["bad_underscore.org"], ["fe80::1%eth0"],
                                   ["-leading.example"], "localhost", ["é.example"]])
def test_bad_hosts_are_refused(hosts: list[str]) -> None:
    ca_cert, ca_key = generate_ca("ca")
    with pytest.raises(ValueError):
        issue_server_certificate(ca_cert, ca_key, "x", hosts)


def test_a_ca_key_that_is_not_the_ca_s_is_refused() -> None:
    ca_cert, _ = generate_ca("ca")
    _, other_key = generate_ca("other")
    with pytest.raises(ValueError, match="does not belong"):
        issue_server_certificate(ca_cert, other_key, "x", ["localhost"])


def test_every_ca_has_its_own_key() -> None:
    assert generate_ca("a")[1] != generate_ca("a")[1]
