"""A reconstruction method as a registry entry (:data:`dipcert.reconstruct.RECONSTRUCTORS`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .case import Case, NotApplicable, Reconstruction


@dataclass(frozen=True)
class Reconstructor:
    """One reconstruction method.

    ``rules``: the parameter-choice (or stopping) rules it offers, the default first; ``"oracle"``
    (the choice nearest x̄, for reference only) where it has a parameter. ``run(case, rules)``
    does the work once and returns one :class:`Reconstruction` per rule asked (e.g. one Landweber
    path stopped by discrepancy and by oracle), or a :class:`NotApplicable` for a rule that cannot
    apply while the others can; it raises NotApplicable when none can. ``applies(case)`` says, before any work, why the
    method cannot reconstruct ``case`` (None when it can). ``family``: ``"classical"`` or ``"dip"``.
    """

    name: str
    help: str
    rules: tuple[str, ...]
    run: Callable[[Case, tuple[str, ...]], dict[str, Reconstruction | NotApplicable]]
    applies: Callable[[Case], str | None] = lambda case: None
    family: str = "classical"

    def reconstruct(self, case: Case, rules: tuple[str, ...] | None = None
                    ) -> dict[str, Reconstruction | NotApplicable]:
        """x̂ of ``case`` by each rule of ``rules`` (default: the default rule)."""
        rules = tuple(rules or self.rules[:1])
        unknown = [r for r in rules if r not in self.rules]
        if unknown:
            raise ValueError(f"{self.name}: unknown rule {unknown[0]!r}; allowed: {', '.join(self.rules)}")
        return self.run(case, rules)
