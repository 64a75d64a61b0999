"""Model weights as one flat wire vector: layout, shard-verifiable digests, chunking.

NumPy only: framework adapters (Keras, PyTorch) convert to lists/dicts of arrays first.
"""

from .chunks import DEFAULT_CHUNK_BYTES, Assembler, block_byte_range, iter_chunks, shard_ranges
from .digest import (
    DIGEST_TAG,
    as_bytes,
    block_hashes,
    digest_from_hashes,
    verify_blocks,
    verify_hash_list,
    weights_digest,
)
from .layout import (
    BLOCK_BYTES,
    SUPPORTED_DTYPES,
    Layout,
    TensorSpec,
    WeightsError,
    check_finite,
)

__all__ = [
    "BLOCK_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "DIGEST_TAG",
    "SUPPORTED_DTYPES",
    "Assembler",
    "Layout",
    "TensorSpec",
    "WeightsError",
    "as_bytes",
    "block_byte_range",
    "block_hashes",
    "check_finite",
    "digest_from_hashes",
    "iter_chunks",
    "shard_ranges",
    "verify_blocks",
    "verify_hash_list",
    "weights_digest",
]
