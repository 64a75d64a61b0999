"""SwarmCallback: the user's training program's side of swarm learning.

`swarm.keras.SwarmCallback` and `swarm.torch.SwarmCallback` wrap the framework-free
`SwarmCallbackCore`; `SwarmCallback` here is the core for plain NumPy loops. None of
them talks to peers: only to the site's SL node, over `LocalChannel`.
"""

from swarm.callback.channel import ADDRESS_ENV, LocalChannel, LocalChannelError
from swarm.callback.core import FINAL_LOG_LINE, SwarmCallback, SwarmCallbackCore
from swarm.callback.params import CHECKIN_MODES, MERGE_METHODS, SwarmParams, parse_params

__all__ = [
    "ADDRESS_ENV",
    "CHECKIN_MODES",
    "FINAL_LOG_LINE",
    "MERGE_METHODS",
    "LocalChannel",
    "LocalChannelError",
    "SwarmCallback",
    "SwarmCallbackCore",
    "SwarmParams",
    "parse_params",
]
