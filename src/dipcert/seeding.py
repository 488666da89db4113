"""Seeds: one integer per run, split into independent streams by purpose.

A run seeded with ``s`` draws its operator, signal, noise and network from distinct streams
``derive_seed(s, purpose)``, so that (for instance) the Gaussian matrix A and the network's W_0 are
never the same numbers, and a run's draws do not depend on which other runs share its batch.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

PURPOSES = ("operator", "signal", "noise", "network")


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose of run ``seed``; stable across platforms and versions."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; allowed: {', '.join(PURPOSES)}")
    if int(seed) < 0:
        raise ValueError(f"seeds must be non-negative integers, got {seed}")
    tag = zlib.crc32(purpose.encode())
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, tag]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for one purpose of run ``seed``."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose))
