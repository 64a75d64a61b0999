"""The swarm ledger: an EVM contract recording members, rounds and merges.

- ``client``: LedgerClient (typed, locally signed transactions), deploy/fund helpers.
- ``embedded``: EmbeddedChain (in-process py-evm chain journaled to disk),
  open_or_deploy, connect_external.
- ``build``: rebuilds the committed contract artifact from SwarmLedger.vy.
"""
from .client import (
    MAX_PARTICIPANTS,
    MAX_WEIGHT,
    MIN_WEIGHT,
    ROLE_NAMES,
    ROLE_SL,
    ROLE_SN,
    ROLE_SWCI,
    STATUS_ACTIVE,
    STATUS_INACTIVE,
    STATUS_NAMES,
    STATUS_REVOKED,
    LedgerClient,
    LedgerError,
    LedgerEvent,
    Member,
    MergeState,
    MergeStatus,
    RoundInfo,
    SessionConfig,
    TransportProvider,
    TxResult,
    deploy_ledger,
    fund,
    load_artifact,
    load_or_create_account,
    node_key,
)
from .embedded import (
    ALLOWED_METHODS,
    ANVIL_CHAIN_ID,
    ANVIL_DEV_KEY,
    EmbeddedChain,
    connect_external,
    external_account,
    open_or_deploy,
)

__all__ = [
    "ALLOWED_METHODS", "ANVIL_CHAIN_ID", "ANVIL_DEV_KEY", "MAX_PARTICIPANTS", "MAX_WEIGHT", "MIN_WEIGHT",
    "ROLE_NAMES", "ROLE_SL", "ROLE_SN", "ROLE_SWCI", "STATUS_ACTIVE", "STATUS_INACTIVE", "STATUS_NAMES",
    "STATUS_REVOKED", "EmbeddedChain", "LedgerClient", "LedgerError", "LedgerEvent", "Member", "MergeState",
    "MergeStatus", "RoundInfo",
    "SessionConfig", "TransportProvider", "TxResult", "connect_external", "deploy_ledger", "external_account",
    "fund", "load_artifact", "load_or_create_account", "node_key", "open_or_deploy",
]
