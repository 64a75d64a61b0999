"""Swarm node certificates: the identity they carry and how they are made.

Every node certificate names its node twice: for people (CN ``{role}-{index}``,
O = site) and for machines, in a private non-critical X.509 extension whose value is
a DER UTF8String ``role=sl;index=1;site=NAME``. Only the extension is trusted for
authorization; the subject is just a label. Everything here uses ``cryptography``;
nothing shells out to openssl.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES: tuple[str, ...] = ("sn", "sl", "swci")

# 2.25.<uuid as integer> is the registration-free OID arc (ITU-T X.667).
# UUID 15a9e97f-e665-44cf-b36a-5da7d84272a8, fixed forever for swarm identities.
IDENTITY_OID = x509.ObjectIdentifier("2.25.28796022015293888069996806638043034280")

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
KeyType = Literal["ec", "rsa"]

_UTF8STRING_TAG = 0x0C
_RSA_BITS = 3072
# Certificates start slightly in the past so small clock skew between sites is harmless.
_BACKDATE = _dt.timedelta(minutes=5)
# Site names end up in file names, the subject O (max 64) and the identity string,
# so keep them to a portable, separator-free alphabet.
_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class IdentityError(ValueError):
    """A certificate carries no usable swarm identity, or identity input is invalid."""


@dataclass(frozen=True)
class NodeIdentity:
    """Who a node is, as proven by its certificate: role, index, site and cert fingerprint."""

    role: str
    index: int
    site: str
    fingerprint: str

    @property
    def node_id(self) -> str:
        return f"{self.site}/{self.role}-{self.index}"

    @property
    def short_fingerprint(self) -> str:
        return self.fingerprint[:16]

    def __str__(self) -> str:
        return f"{self.node_id} (fp {self.short_fingerprint})"


# --------------------------------------------------------------------------- validation


def validate_site(site: str) -> str:
    """Return ``site`` if it is a usable site name, else raise IdentityError."""
    if not isinstance(site, str) or not site:
        raise IdentityError("site name is empty")
    if "/" in site or any(ch.isspace() for ch in site):
        raise IdentityError(f"site name {site!r} must not contain '/' or spaces")
    if not _SITE_RE.match(site):
        raise IdentityError(
            f"site name {site!r} must be 1-64 characters of letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    return site


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise IdentityError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def validate_index(index: int) -> int:
    # bool is an int subclass; True as an index is always a bug.
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise IdentityError(f"index {index!r} is not a non-negative integer")
    return index


# --------------------------------------------------------------------------- DER helpers


def _der_utf8string(text: str) -> bytes:
    """DER-encode one UTF8String (tag 0x0C, definite length)."""
    body = text.encode("utf-8")
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([_UTF8STRING_TAG]) + length + body


def _parse_der_utf8string(data: bytes) -> str:
    """Decode exactly one DER UTF8String; raise IdentityError on anything else."""
    if len(data) < 2 or data[0] != _UTF8STRING_TAG:
        raise IdentityError("identity extension is not a DER UTF8String")
    first = data[1]
    offset = 2
    if first < 0x80:
        n = first
    else:
        count = first & 0x7F
        # 0x80 is BER indefinite length (not DER); >4 length bytes is absurd here.
        if count == 0 or count > 4 or len(data) < offset + count:
            raise IdentityError("identity extension has a bad DER length")
        raw = data[offset : offset + count]
        if raw[0] == 0:
            raise IdentityError("identity extension has a non-minimal DER length")
        n = int.from_bytes(raw, "big")
        if n < 0x80:
            raise IdentityError("identity extension has a non-minimal DER length")
        offset += count
    if len(data) != offset + n:
        raise IdentityError(
            f"identity extension length mismatch: header says {n} bytes, "
            f"{len(data) - offset} present"
        )
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IdentityError("identity extension is not valid UTF-8") from exc


def encode_identity_value(role: str, index: int, site: str) -> bytes:
    """The DER extension value for a node identity."""
    validate_role(role)
    validate_index(index)
    validate_site(site)
    return _der_utf8string(f"role={role};index={index};site={site}")


def decode_identity_value(value: bytes) -> tuple[str, int, str]:
    """Parse the extension value back into (role, index, site), strictly."""
    text = _parse_der_utf8string(value)
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, val = part.partition("=")
        if not sep or key in fields:
            raise IdentityError(f"identity {text!r} is malformed")
        fields[key] = val
    if set(fields) != {"role", "index", "site"}:
        raise IdentityError(f"identity {text!r} must have exactly role, index and site")
    if not fields["index"].isdigit() or not fields["index"].isascii():
        raise IdentityError(f"identity {text!r} has a non-numeric index")
    role = validate_role(fields["role"])
    site = validate_site(fields["site"])
    return role, int(fields["index"]), site


# --------------------------------------------------------------------------- reading


def _load_cert(cert: Union[bytes, x509.Certificate]) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    try:
        return x509.load_pem_x509_certificate(cert)
    except ValueError as exc:
        raise IdentityError(f"not a PEM certificate: {exc}") from exc


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else "?"


def name_to_str(name: x509.Name) -> str:
    """A subject/issuer in certificate order (``CN=sl-1, O=site``), for people to read."""
    return ", ".join(attr.rfc4514_string() for attr in name)


def fingerprint_of(cert_pem: Union[bytes, x509.Certificate]) -> str:
    """Lowercase hex SHA-256 of the certificate DER, no colons."""
    cert = _load_cert(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def identity_of(cert: x509.Certificate) -> NodeIdentity:
    """The swarm identity of an already-parsed certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(IDENTITY_OID)
    except x509.ExtensionNotFound:
        raise IdentityError(
            f"certificate CN={_common_name(cert)} has no swarm identity extension; "
            "make it with gen-cert"
        ) from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - defensive
        raise IdentityError("swarm identity extension has an unexpected type")
    try:
        role, index, site = decode_identity_value(value.value)
    except IdentityError as exc:
        raise IdentityError(
            f"certificate CN={_common_name(cert)} has a malformed swarm identity extension: {exc}"
        ) from None
    return NodeIdentity(role=role, index=index, site=site, fingerprint=fingerprint_of(cert))


def identity_from_pem(cert_pem: bytes) -> NodeIdentity:
    """Parse a PEM certificate and return its swarm identity (IdentityError if absent)."""
    return identity_of(_load_cert(cert_pem))


def _ip_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def _dns_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


def is_ca_certificate(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def describe_certificate(cert_pem: bytes) -> dict:
    """Everything ``gen-cert --show`` prints about one certificate.

    Identity fields are None for certificates without a swarm identity (e.g. a CA);
    ``identity_error`` then says why.
    """
    cert = _load_cert(cert_pem)
    now = _dt.datetime.now(_dt.timezone.utc)
    info: dict = {
        "role": None,
        "index": None,
        "site": None,
        "node_id": None,
        "identity_error": None,
        "subject": name_to_str(cert.subject),
        "issuer": name_to_str(cert.issuer),
        "is_ca": is_ca_certificate(cert),
        "dns_sans": _dns_sans(cert),
        "ip_sans": _ip_sans(cert),
        "fingerprint": fingerprint_of(cert),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "expired": now > cert.not_valid_after_utc,
        "not_yet_valid": now < cert.not_valid_before_utc,
        "key_type": "rsa" if isinstance(cert.public_key(), rsa.RSAPublicKey) else "ec",
    }
    try:
        ident = identity_of(cert)
    except IdentityError as exc:
        info["identity_error"] = str(exc)
    else:
        info.update(role=ident.role, index=ident.index, site=ident.site, node_id=ident.node_id)
    return info


# --------------------------------------------------------------------------- generation


def generate_key(key_type: KeyType = "ec") -> PrivateKey:
    """EC P-256 (fast, the default) or RSA 3072."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    raise IdentityError(f"key type {key_type!r} is not 'ec' or 'rsa'")


def _validity(
    days: int, not_before: _dt.datetime | None, not_after: _dt.datetime | None
) -> tuple[_dt.datetime, _dt.datetime]:
    if days <= 0:
        raise IdentityError(f"validity days must be positive, got {days}")
    start = not_before or (_dt.datetime.now(_dt.timezone.utc) - _BACKDATE)
    end = not_after or (start + _BACKDATE + _dt.timedelta(days=days))
    if end <= start:
        raise IdentityError("not_after must be later than not_before")
    return start, end


def create_ca(
    site: str, index: int, *, key_type: KeyType = "ec", days: int = 3650
) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed site CA (CN ``{site} swarm CA {index}``) that signs node certificates."""
    validate_site(site)
    validate_index(index)
    key = generate_key(key_type)
    start, end = _validity(days, None, None)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{site} swarm CA {index}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, site),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_node_certificate(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    *,
    role: str,
    index: int,
    site: str,
    host_ips: Iterable[str] = (),
    dns_names: Iterable[str] = (),
    key_type: KeyType = "ec",
    days: int = 365,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
) -> tuple[PrivateKey, x509.Certificate]:
    """A node certificate for ``role``/``index`` at ``site``, signed by the site CA.

    It is valid as both TLS server and client, carries the identity extension and the
    DNS SAN ``swarm-{role}`` that clients pin through ``ssl_target_name_override``.
    """
    validate_role(role)
    validate_index(index)
    validate_site(site)
    try:
        ips = [ipaddress.ip_address(ip) for ip in host_ips]
    except ValueError as exc:
        raise IdentityError(str(exc)) from None
    key = generate_key(key_type)
    start, end = _validity(days, not_before, not_after)
    sans: list[x509.GeneralName] = [x509.DNSName(f"swarm-{role}")]
    sans += [x509.DNSName(name) for name in dns_names if name != f"swarm-{role}"]
    sans += [x509.IPAddress(ip) for ip in ips]
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, f"{role}-{index}"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, site),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(IDENTITY_OID, encode_identity_value(role, index, site)),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


# --------------------------------------------------------------------------- PEM I/O


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # mkstemp creates the file 0600 from the start, so a key is never world-readable,
    # not even briefly; rename makes the write all-or-nothing.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pem_key(path: Union[str, Path], key: PrivateKey) -> Path:
    """Write an unencrypted PKCS#8 PEM key, created with mode 0600."""
    path = Path(path)
    _write_atomic(path, key_to_pem(key), 0o600)
    return path


def write_pem_cert(path: Union[str, Path], cert: x509.Certificate) -> Path:
    """Write a PEM certificate (mode 0644)."""
    path = Path(path)
    _write_atomic(path, cert_to_pem(cert), 0o644)
    return path


def load_pem_private_key(data: bytes) -> PrivateKey:
    """Load an unencrypted PEM private key (EC or RSA); IdentityError otherwise."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise IdentityError("private key is encrypted; swarm needs an unencrypted key") from None
    except ValueError as exc:
        raise IdentityError(f"not a PEM private key ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise IdentityError("private key is neither EC nor RSA")
    return key


def key_matches_cert(key: PrivateKey, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)
