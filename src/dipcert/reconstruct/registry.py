"""The registry of reconstruction methods, by name."""
from __future__ import annotations

from . import classical, dip, packages, tv
from .entry import Reconstructor

RECONSTRUCTORS: dict[str, Reconstructor] = {
    entry.name: entry for module in (classical, packages, tv, dip) for entry in module.ENTRIES}
