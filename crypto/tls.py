"""TLS for the aggregator's websocket endpoint: a private CA, its server certificate, contexts.

Each federation has its own CA (written by ``fedtally federation init``). Nodes and
researchers trust that CA *only*, never the system store, so a certificate from any public
CA is refused even for the right name. TLS protects the transport; the protocol's own
Ed25519 signatures still authenticate every message end to end.

Keys are ECDSA P-256: every TLS stack (and Python's ``ssl`` with any OpenSSL) accepts it,
which is not yet true of Ed25519 certificates. Key generation uses ``cryptography``'s own
CSPRNG: TLS keys are never derived from an injected test seed.

Certificates carry what strict verifiers (OpenSSL's ``X509_V_FLAG_X509_STRICT``, on by
default from Python 3.13) require: critical BasicConstraints, KeyUsage, subject and
authority key identifiers, and the server name only in SubjectAlternativeName.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_VALIDITY",
    "SERVER_VALIDITY",
    "certificate_fingerprint",
    "client_ssl_context",
    "generate_ca",
    "issue_server_certificate",
    "server_ssl_context",
]

#: the CA outlives several server certificates, so re-issuing one needs no redistribution
CA_VALIDITY = datetime.timedelta(days=5 * 365)
#: about two years (within the 825 days some platforms accept for server certificates)
SERVER_VALIDITY = datetime.timedelta(days=730)
#: tolerate machines whose clocks run a little behind the one that issued the certificate
_BACKDATE = datetime.timedelta(hours=1)
#: TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are all of that kind)
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: a DNS name as SubjectAlternativeName takes it: ASCII labels, optionally one leading wildcard
_DNS_NAME = re.compile(
    r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)

Pem = bytes


def generate_ca(name: str) -> tuple[Pem, Pem]:
    """A new self-signed CA: ``(cert_pem, key_pem)``, the key as unencrypted PKCS#8 PEM."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("the CA needs a non-empty name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    builder = (
        _validity(x509.CertificateBuilder(), CA_VALIDITY)
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # path_length=0: this CA signs server certificates, never another CA
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    return _cert_pem(cert), _key_pem(key)


def issue_server_certificate(ca_cert_pem: Pem, ca_key_pem: Pem, common_name: str,
                             hosts: list[str]) -> tuple[Pem, Pem]:
    """A server certificate for ``hosts`` (DNS names and IP addresses), signed by the CA.

    Every host is put in SubjectAlternativeName (hostname checking reads only that);
    ``common_name`` is a label for people. Raises ``ValueError`` for a malformed host.
    """
    sans = _subject_alt_names(hosts)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    if _spki(ca_key.public_key()) != _spki(ca_cert.public_key()):
        raise ValueError("the CA key does not belong to the CA certificate")
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    builder = (
        _validity(x509.CertificateBuilder(), SERVER_VALIDITY)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
    )
    cert = builder.sign(ca_key, hashes.SHA256())
    return _cert_pem(cert), _key_pem(key)


def server_ssl_context(cert_path: str | Path, key_path: str | Path) -> ssl.SSLContext:
    """The aggregator's context: TLS >= 1.2, no compression (CRIME), forward-secret suites."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    context.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
    return context


def client_ssl_context(ca_path: str | Path) -> ssl.SSLContext:
    """A node's or researcher's context: trusts the federation CA only, checks the hostname."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(context)
    # PROTOCOL_TLS_CLIENT already sets both; stated so that no later edit loosens them
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    # load_verify_locations and never load_default_certs: a public CA must not vouch for us
    context.load_verify_locations(cafile=str(ca_path))
    return context


# --- helpers ------------------------------------------------------------------------------


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(_TLS12_CIPHERS)


def _subject_alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    if isinstance(hosts, str) or not hosts:
        raise ValueError("a server certificate needs at least one host (a list of names)")
    names: list[x509.GeneralName] = []
    for host in hosts:
        name = _general_name(host)
        if name not in names:  # duplicates are legal but noisy
            names.append(name)
    return names


def _general_name(host: str) -> x509.GeneralName:
    if not isinstance(host, str):
        raise ValueError("a host must be a string")
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):  # "[::1]" as written in URLs
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise ValueError(f"host {host!r}: a scoped IPv6 address cannot go in a certificate")
        return x509.IPAddress(address)
    if len(text) > 253 or not _DNS_NAME.fullmatch(text):
        raise ValueError(f"host {host!r} is neither an IP address nor an ASCII DNS name")
    return x509.DNSName(text.lower())


def _validity(builder: x509.CertificateBuilder,
              lifetime: datetime.timedelta) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - _BACKDATE).not_valid_after(now + lifetime)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    # an ECDSA server key signs the handshake (digital_signature); a CA signs certificates
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        public = ca_cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError("the CA key is not an EC key") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _spki(public: object) -> bytes:
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValueError("the CA key is not an EC key")
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_pem(cert: x509.Certificate) -> Pem:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> Pem:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificate_fingerprint(pem_or_der: bytes) -> str:
    """SHA-256 (hex) of a certificate's DER encoding, as ``openssl x509 -fingerprint
    -sha256`` prints it without the colons: what members pin for the federation CA, and
    what a signed hello binds the TLS session's server certificate to (RFC 5929's
    tls-server-end-point). A malformed certificate raises ``CertificateError``."""
    try:
        cert = (x509.load_pem_x509_certificate(pem_or_der) if pem_or_der.lstrip().startswith(
            b"-----") else x509.load_der_x509_certificate(pem_or_der))
    except ValueError as exc:
        raise ssl.CertificateError("not a certificate") from exc
    return cert.fingerprint(hashes.SHA256()).hex()
