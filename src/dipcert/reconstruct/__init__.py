"""Every reconstruction method behind one interface: ``RECONSTRUCTORS[name].reconstruct(case, rules)``
(:mod:`dipcert.reconstruct.registry`).

Classical baselines (:mod:`.classical`, :mod:`.tv`, :mod:`.packages`) and the DIPs (:mod:`.dip`) are
registry entries (:class:`~dipcert.reconstruct.entry.Reconstructor`); ``dipcert compare`` runs them
on the same cases (:class:`~dipcert.reconstruct.case.Case`).
"""
from __future__ import annotations

from .case import Case, NotApplicable, Reconstruction, build_case
from .entry import Reconstructor

__all__ = ["Case", "NotApplicable", "Reconstruction", "Reconstructor", "build_case"]
