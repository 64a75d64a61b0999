"""Swarm node identity: certificates that say who a node is, and mutual TLS built on them."""

from .certificates import (
    IDENTITY_OID,
    ROLES,
    IdentityError,
    NodeIdentity,
    create_ca,
    describe_certificate,
    fingerprint_of,
    identity_from_pem,
    issue_node_certificate,
    write_pem_cert,
    write_pem_key,
)
from .tls import (
    Authorizer,
    TlsConfigError,
    TlsFiles,
    TlsMaterial,
    caller_identity,
    explain_connection_failure,
    load_tls,
    peer_ip,
    role_name,
)

__all__ = [
    "IDENTITY_OID",
    "ROLES",
    "Authorizer",
    "IdentityError",
    "NodeIdentity",
    "TlsConfigError",
    "TlsFiles",
    "TlsMaterial",
    "caller_identity",
    "create_ca",
    "describe_certificate",
    "explain_connection_failure",
    "fingerprint_of",
    "identity_from_pem",
    "issue_node_certificate",
    "load_tls",
    "peer_ip",
    "role_name",
    "write_pem_cert",
    "write_pem_key",
]
