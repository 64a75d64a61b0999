"""Mutual TLS for every swarm connection: loading key material, gRPC credentials,
identifying and authorizing callers, and explaining failed connections.

This module is the only place that builds gRPC credentials. A peer is verified by
(1) its certificate chaining to a CA in our capath and (2) its role, pinned through the
DNS SAN ``swarm-{role}`` with ``grpc.ssl_target_name_override`` -- never by hostname, so
certificates made with only ``gen-cert -e NAME -i INDEX`` work across hosts.
"""

from __future__ import annotations

import datetime as _dt
import functools
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NoReturn, Optional, Sequence, Union
from urllib.parse import unquote

import grpc
from cryptography import x509

from .certificates import (
    ROLES,
    IdentityError,
    NodeIdentity,
    cert_to_pem,
    fingerprint_of,
    identity_of,
    is_ca_certificate,
    key_matches_cert,
    load_pem_private_key,
    name_to_str,
)

PathLike = Union[str, "os.PathLike[str]"]

_log = logging.getLogger("swarm.identity")

def role_name(role: str) -> str:
    """The DNS SAN every node certificate of ``role`` carries; clients pin it."""
    return f"swarm-{role}"


class TlsConfigError(ValueError):
    """A --cert/--key/--capath setting is unusable; the message names the flag and problem."""


# --------------------------------------------------------------------------- material


def _fmt_time(ts: _dt.datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, ValueError, TypeError: all mean "not this CA"
        return False
    return True


@dataclass(frozen=True)
class TlsMaterial:
    """A node's loaded key material; builds its gRPC server/channel credentials.

    ``ca_bundle_pem`` is every CA certificate in the node's capath: a node trusts
    exactly those CAs, for both the peers it serves and the peers it calls.
    """

    cert_pem: bytes
    key_pem: bytes
    ca_bundle_pem: bytes
    identity: NodeIdentity

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.ca_bundle_pem,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_bundle_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )

    def secure_channel(
        self, target: str, peer_role: str, options: Sequence[tuple[str, object]] = ()
    ) -> grpc.Channel:
        """A channel to ``target`` that only accepts a peer certified for ``peer_role``."""
        if peer_role not in ROLES:
            raise ValueError(f"peer role {peer_role!r} is not one of {', '.join(ROLES)}")
        opts = [o for o in options if o[0] != "grpc.ssl_target_name_override"]
        opts.append(("grpc.ssl_target_name_override", role_name(peer_role)))
        return grpc.secure_channel(target, self.channel_credentials(), options=opts)


def _read_file(path: Path, flag: str) -> bytes:
    if not path.exists():
        raise TlsConfigError(f"{flag} {path}: no such file")
    if path.is_dir():
        raise TlsConfigError(f"{flag} {path}: is a directory, expected a PEM file")
    try:
        return path.read_bytes()
    except PermissionError:
        raise TlsConfigError(f"{flag} {path}: not readable (permission denied)") from None
    except OSError as exc:
        raise TlsConfigError(f"{flag} {path}: cannot read ({exc.strerror or exc})") from None


def _load_capath(capath: Path) -> list[tuple[Path, x509.Certificate]]:
    """Every CA certificate in capath/*.pem, sorted by file name."""
    if not capath.exists():
        raise TlsConfigError(f"--capath {capath}: no such directory")
    if not capath.is_dir():
        raise TlsConfigError(f"--capath {capath}: is not a directory")
    cas: list[tuple[Path, x509.Certificate]] = []
    try:
        files = sorted(p for p in capath.glob("*.pem") if p.is_file())
    except PermissionError:
        raise TlsConfigError(f"--capath {capath}: not readable (permission denied)") from None
    for pem_file in files:
        data = _read_file(pem_file, "--capath")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise TlsConfigError(
                f"--capath {capath}: {pem_file.name} is not a PEM certificate"
            ) from None
        # Node certificates or stray files in capath are not trust anchors.
        cas += [(pem_file, c) for c in certs if is_ca_certificate(c)]
    if not cas:
        raise TlsConfigError(
            f"--capath {capath}: has no *.pem CA certificates (gen-cert puts them in "
            "NAME/cert/ca/capath)"
        )
    return cas


def load_tls(cert: PathLike, key: PathLike, capath: PathLike) -> TlsMaterial:
    """Load and check a node's certificate, key and capath; TlsConfigError on any problem."""
    cert_path, key_path, ca_dir = Path(cert), Path(key), Path(capath)

    cert_pem = _read_file(cert_path, "--cert")
    try:
        own = x509.load_pem_x509_certificates(cert_pem)[0]
    except (ValueError, IndexError):
        raise TlsConfigError(f"--cert {cert_path}: not a PEM certificate") from None
    try:
        identity = identity_of(own)
    except IdentityError as exc:
        raise TlsConfigError(f"--cert {cert_path}: {exc}") from None

    now = _dt.datetime.now(_dt.timezone.utc)
    if now > own.not_valid_after_utc:
        raise TlsConfigError(
            f"--cert {cert_path}: own certificate {identity.node_id} expired on "
            f"{_fmt_time(own.not_valid_after_utc)}; make a new one with gen-cert"
        )
    if now < own.not_valid_before_utc:
        raise TlsConfigError(
            f"--cert {cert_path}: own certificate {identity.node_id} is not yet valid "
            f"(valid from {_fmt_time(own.not_valid_before_utc)}); check this machine's clock"
        )

    key_pem = _read_file(key_path, "--key")
    try:
        private_key = load_pem_private_key(key_pem)
    except IdentityError as exc:
        raise TlsConfigError(f"--key {key_path}: {exc}") from None
    if not key_matches_cert(private_key, own):
        raise TlsConfigError(
            f"--key {key_path}: key does not match the certificate in --cert {cert_path}"
        )

    cas = _load_capath(ca_dir)
    issuers = [(p, ca) for p, ca in cas if _issued_by(own, ca)]
    if not issuers:
        raise TlsConfigError(
            f"--cert {cert_path}: own certificate {identity.node_id} is not issued by any CA "
            f"in --capath {ca_dir} (its issuer is {name_to_str(own.issuer)})"
        )
    if all(now > ca.not_valid_after_utc for _, ca in issuers):
        p, ca = issuers[0]
        raise TlsConfigError(
            f"--capath {ca_dir}: {p.name}, the CA that issued --cert, expired on "
            f"{_fmt_time(ca.not_valid_after_utc)}"
        )

    # Same CA copied under two names (common with --ca-cert reuse) is trusted once.
    seen: set[str] = set()
    bundle: list[bytes] = []
    for _, ca in cas:
        fp = fingerprint_of(ca)
        if fp not in seen:
            seen.add(fp)
            bundle.append(cert_to_pem(ca))
    return TlsMaterial(
        cert_pem=cert_pem, key_pem=key_pem, ca_bundle_pem=b"".join(bundle), identity=identity
    )


@dataclass(frozen=True)
class TlsFiles:
    """The three TLS settings of a node program (--cert, --key, --capath), unloaded."""

    cert: Path
    key: Path
    capath: Path

    def load(self) -> TlsMaterial:
        return load_tls(self.cert, self.key, self.capath)


# --------------------------------------------------------------------------- callers


@functools.lru_cache(maxsize=512)
def _parse_peer_cert(pem: bytes) -> tuple[NodeIdentity, frozenset]:
    """Identity and IP SANs of a peer certificate (cached: parsed on every RPC otherwise)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise IdentityError(f"peer certificate is not parseable: {exc}") from None
    ident = identity_of(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = frozenset(san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        ips = frozenset()
    return ident, ips


def _peer_cert_pem(context: grpc.ServicerContext) -> bytes:
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        raise IdentityError("caller presented no client certificate (not a mutual-TLS connection)")
    pem = pems[0]
    return pem.encode() if isinstance(pem, str) else pem


def caller_identity(context: grpc.ServicerContext) -> NodeIdentity:
    """The NodeIdentity of the client of this RPC, from its TLS certificate."""
    return _parse_peer_cert(_peer_cert_pem(context))[0]


def peer_ip(peer: str) -> Optional[ipaddress._BaseAddress]:
    """The IP of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``); None otherwise."""
    peer = unquote(peer or "")  # newer gRPC percent-encodes the IPv6 brackets
    kind, _, rest = peer.partition(":")
    try:
        if kind == "ipv4":
            ip = ipaddress.ip_address(rest.rsplit(":", 1)[0])
        elif kind == "ipv6":
            host = rest[1:].split("]", 1)[0] if rest.startswith("[") else rest.rsplit(":", 1)[0]
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        else:
            return None
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Authorizer:
    """Decides, per RPC, whether the certified caller may perform an action.

    Checks (in order): the caller has a swarm identity, its certificate is not revoked,
    its role is allowed, and -- if its certificate is bound to IP addresses -- it connects
    from one of them. A refusal aborts the RPC and logs one WARNING line.
    """

    def __init__(
        self,
        is_revoked: Callable[[str], bool] = lambda fp: False,
        logger: logging.Logger = _log,
    ) -> None:
        self._is_revoked = is_revoked
        self._log = logger

    def authorize(
        self, context: grpc.ServicerContext, allowed_roles: Iterable[str], action: str
    ) -> NodeIdentity:
        peer = context.peer()
        try:
            ident, ips = _parse_peer_cert(_peer_cert_pem(context))
        except IdentityError as exc:
            self._deny(context, grpc.StatusCode.UNAUTHENTICATED, f"{action} refused: {exc}", peer)
        who = f"{ident.role}-{ident.index} ({ident.node_id}, fp {ident.short_fingerprint})"

        try:
            revoked = self._is_revoked(ident.fingerprint)
        except Exception as exc:  # fail closed: an unknown revocation state is no pass
            self._deny(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"{who} may not call {action}: revocation check failed ({exc})",
                peer,
            )
        if revoked:
            self._deny(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{who} may not call {action}: its certificate is revoked",
                peer,
            )

        allowed = tuple(allowed_roles)
        if ident.role not in allowed:
            self._deny(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{who} with role '{ident.role}' may not call {action}; "
                f"allowed: {', '.join(allowed) or 'none'}",
                peer,
            )

        if ips:
            ip = peer_ip(peer)
            # Unix-socket peers are on this host; the IP binding is about which host.
            if not peer.startswith("unix") and ip not in ips:
                bound = ", ".join(sorted(str(i) for i in ips))
                self._deny(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{who} may not call {action}: it connects from {ip or peer}, "
                    f"but its certificate is bound to IP {bound}",
                    peer,
                )
        return ident

    def _deny(
        self, context: grpc.ServicerContext, code: grpc.StatusCode, reason: str, peer: str
    ) -> NoReturn:
        self._log.warning("denied: %s [peer %s]", reason, peer)
        context.abort(code, reason)
        raise PermissionError(reason)  # abort() always raises; this keeps the type NoReturn


# --------------------------------------------------------------------------- diagnosis


def _split_target(target: str) -> tuple[str, int]:
    """Host and port of a gRPC target (``host:port``, ``dns:///h:p``, ``ipv4:``, ``[v6]:p``)."""
    t = target
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if t.startswith(prefix):
            t = t[len(prefix) :]
            break
    t = unquote(t.split(",", 1)[0])
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest.lstrip(":")
    elif t.count(":") == 1:
        host, port = t.split(":")
    elif t.count(":") > 1:  # bare IPv6 without port
        host, port = t, ""
    else:
        host, port = t, ""
    return host, int(port) if port.isdigit() else 443


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# HTTP/2 client preface + empty SETTINGS: makes a gRPC server answer once it accepted us.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _probe_tls(
    host: str, port: int, material: TlsMaterial, peer_role: str, timeout: float
) -> tuple[Optional[bytes], Optional[str], Optional[str]]:
    """One handshake with our cert/key. Returns (server cert DER, refusal, other error)."""
    with tempfile.TemporaryDirectory(prefix="swarm-probe-") as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(material.cert_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(material.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # we verify the server cert ourselves, to explain it
        ctx.set_alpn_protocols(["h2"])
        ctx.load_cert_chain(cert_file, key_file)

    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        try:
            tls = ctx.wrap_socket(sock, server_hostname=role_name(peer_role))
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            if "ALERT" in str(reason).upper():  # TLS 1.2: client cert refused in handshake
                return None, str(reason), None
            return None, None, f"TLS handshake failed ({reason})"
        except OSError as exc:
            return None, None, f"TLS handshake failed ({exc})"
        der = tls.getpeercert(binary_form=True)
        # TLS 1.3: the server judges our certificate after our side of the handshake
        # finished, so the refusal arrives as an alert on the first read.
        refusal: Optional[str] = None
        try:
            tls.sendall(_H2_PREFACE)
            if tls.recv(1) == b"":
                refusal = "connection closed right after the handshake"
        except ssl.SSLError as exc:
            refusal = str(exc.reason or exc)
        except (socket.timeout, TimeoutError):
            pass  # silence, but no refusal
        except OSError as exc:
            refusal = f"connection reset ({exc.strerror or exc})"
        tls.close()
        return der, refusal, None
    finally:
        sock.close()


def _server_cert_problem(
    der: bytes, material: TlsMaterial, peer_role: str, hp: str
) -> Optional[str]:
    """Why we would not accept the server's certificate for ``peer_role``, or None."""
    cert = x509.load_der_x509_certificate(der)
    cas = x509.load_pem_x509_certificates(material.ca_bundle_pem)
    try:
        ident: Optional[NodeIdentity] = identity_of(cert)
        label = ident.node_id
    except IdentityError:
        ident, label = None, name_to_str(cert.subject)
    if not any(_issued_by(cert, ca) for ca in cas):
        return (
            f"{hp} presented certificate {label} issued by {name_to_str(cert.issuer)}, "
            "which no CA in our capath trusts (copy that site's ca-*-cert.pem into our capath)"
        )
    now = _dt.datetime.now(_dt.timezone.utc)
    if now > cert.not_valid_after_utc:
        return (f"{hp} presented certificate {label} that expired on "
                f"{_fmt_time(cert.not_valid_after_utc)}")
    if now < cert.not_valid_before_utc:
        return (f"{hp} presented certificate {label} that is not valid before "
                f"{_fmt_time(cert.not_valid_before_utc)}")
    if ident is None:
        return f"{hp} presented certificate {label} without a swarm identity; make it with gen-cert"
    if ident.role != peer_role:
        return (f"{hp} is {ident.node_id} with role '{ident.role}', "
                f"not the '{peer_role}' we expected")
    return None


def explain_connection_failure(
    target: str,
    material: TlsMaterial,
    peer_role: str,
    error: Optional[BaseException] = None,
    *,
    timeout: float = 2.0,
) -> str:
    """A one-line, best-effort explanation of why a call to ``target`` failed.

    A client refused in the TLS handshake only sees "Socket closed", so for transport
    failures this probes the server once: TCP connect, then a TLS handshake with our
    certificate, then checks the server's certificate against our capath and role.
    """
    # A bare grpc.RpcError (e.g. from a future) need not have code()/details().
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    if code is not None and code not in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ):
        return f"{target}: {code.name}: {details}"

    host, port = _split_target(target)
    hp = _hostport(host, port)
    me = material.identity.node_id
    try:
        der, refusal, other = _probe_tls(host, port, material, peer_role, timeout)
    except ConnectionRefusedError:
        return f"nothing listens on {hp} (connection refused)"
    except socket.gaierror:
        return f"cannot resolve host {host!r} of {hp}"
    except (socket.timeout, TimeoutError):
        return (f"{hp} did not answer within {timeout:g}s "
                "(host down, or a firewall drops the connection)")
    except OSError as exc:
        return f"cannot connect to {hp}: {exc.strerror or exc}"
    except Exception as exc:  # best effort: never let the diagnosis itself fail
        return f"call to {hp} failed ({code.name if code else error}); probing it failed too: {exc}"

    if other is not None:
        return f"{hp}: {other}"
    problem = _server_cert_problem(der, material, peer_role, hp) if der else None
    if refusal is not None:
        own = x509.load_pem_x509_certificates(material.cert_pem)[0]
        if _dt.datetime.now(_dt.timezone.utc) > own.not_valid_after_utc:
            why = f"our certificate expired on {_fmt_time(own.not_valid_after_utc)}"
        else:
            why = "its capath does not trust our CA, or our certificate is expired/revoked"
        msg = f"{hp} refused our certificate {me} during the TLS handshake: {why} [{refusal}]"
        return f"{msg}; also: {problem}" if problem else msg
    if problem is not None:
        return problem
    status = f"{code.name}: {details}" if code is not None else str(error)
    return (f"{hp} accepts our certificate {me} and is a valid '{peer_role}'; "
            f"the call failed with {status}")
