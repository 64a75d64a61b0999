"""The sharded exchange of one sync round, as one protocol package.

- `plan`: the sealed round (who takes part, who owns which range), typed failures.
- `inbox`: where pushes land, typed stores with one claim per (message, sender);
  `Inboxes` keeps buffers for the current round only.
- `update`, `merged`, `partial`: each message's sending and receiving side together.
- `agreement`: who decides which updates are valid (receipts via the SN, or votes).
- `codec`: how a range crosses the wire (identity today).
- `faults`: the outgoing hook through which tests and experiments inject faults.
- `runner`: the round's phases in order (`Exchange.run`).
"""

from sl_node.exchange.agreement import Agreement, ReceiptAgreement, VoteAgreement
from sl_node.exchange.codec import IDENTITY, Codec, IdentityCodec
from sl_node.exchange.faults import Fault, FaultHook, Kind, Outgoing, OutgoingHook, hook_from_env
from sl_node.exchange.gate import Gate
from sl_node.exchange.inbox import Inboxes, RoundInbox
from sl_node.exchange.plan import FailReason, Peer, RoundFailed, RoundPlan
from sl_node.exchange.runner import Exchange, ExchangeResult
from sl_node.exchange.transport import CHUNK_BYTES, ByteCounter
from sl_node.exchange.update import verify_update_header

__all__ = [
    "Agreement", "ByteCounter", "CHUNK_BYTES", "Codec", "Exchange", "ExchangeResult",
    "FailReason", "Fault", "FaultHook", "Gate", "IDENTITY", "IdentityCodec", "Inboxes",
    "Kind", "Outgoing", "OutgoingHook", "Peer", "ReceiptAgreement", "RoundFailed",
    "RoundInbox", "RoundPlan", "VoteAgreement", "hook_from_env", "verify_update_header",
]
