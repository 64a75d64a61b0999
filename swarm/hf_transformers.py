"""The established product's import path for the Hugging Face callback:
`from swarm.hf_transformers import SwarmCallback` is `swarm.hf.SwarmCallback`."""

from swarm.hf import SwarmCallback

__all__ = ["SwarmCallback"]
