"""Registries of components: every option a user can set is declared here once.

An :class:`Option` declares a name, a type, a default, an allowed range or choice list, a help text
and a unit; :meth:`Option.parse` turns a command-line string or a config-file value into a checked
value, with a one-line message when it cannot. A :class:`Component` is one choice of a kind
(an operator, a loss, a training method…): its options, capability flags and the defaults it implies
for options of other sections. A :class:`Section` groups the components of one kind behind a selector
option (``--operator blur``) or, for plain settings (seeds, output folder), holds one component.

The CLI, config files, ``metrics.json`` and the README's option reference are generated from the
sections of :mod:`dipcert.components`; nothing else declares an option, a choice list or a default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping


class OptionError(ValueError):
    """A value that an option does not accept; the message names the option and what it allows."""


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass(frozen=True)
class Option:
    """One user-settable value.

    ``kind`` is ``int``, ``float``, ``str``, ``bool`` or ``tuple`` (then ``item`` is the element
    type and ``length`` the number of elements, or 0 for any length ≥ 1, written ``a,b,c``).
    ``low``/``high`` bound numbers (``open_low``/``open_high`` exclude the bound); ``words`` are
    strings accepted besides a number (``"auto"``). A default of ``None`` is decided by a rule that
    ``default_text`` describes (e.g. implied by the chosen signal).
    """

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    words: tuple[str, ...] = ()
    unit: str = ""
    item: type = float
    length: int = 0
    flag: str = ""
    aliases: tuple[str, ...] = ()
    default_text: str = ""
    allowed_text: str = ""  # what the option accepts, where ``parser`` decides it
    parser: Callable[[Any], Any] | None = None  # special syntax: value -> checked value, or ValueError
    section: str = ""  # set by the Section that holds it

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """``section.name``, the option's address in a configuration."""
        return f"{self.section}.{self.name}"

    def allowed(self) -> str:
        """What the option accepts, in words."""
        if self.allowed_text:
            return self.allowed_text
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        if self.kind is tuple:
            count = f"{self.length} " if self.length else ""
            return f"{count}comma-separated {self.item.__name__}s ({self._range_text()})".replace(" ()", "")
        if self.kind is str:
            return "text"
        text = ("an integer" if self.kind is int else "a number") + self._range_text(prefix=" ")
        if self.words:
            text += " or " + " or ".join(repr(w) for w in self.words)
        return text

    def _range_text(self, prefix: str = "") -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {_number_text(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '<='} {_number_text(self.high)}")
        return (prefix + " and ".join(parts)) if parts else ""

    def fail(self, value: Any, reason: str = "") -> OptionError:
        if self.parser is not None:
            return OptionError(f"{self.cli_flag}: {reason}, got {value!r}")
        why = f" ({reason})" if reason else ""
        return OptionError(f"{self.cli_flag}: expected {self.allowed()}, got {value!r}{why}")

    def parse(self, value: Any) -> Any:
        """The checked value of ``value`` (a string from the command line, or a TOML/JSON value)."""
        if value is None:
            if self.default is None:
                return None
            raise self.fail(value)
        if self.parser is not None:
            try:
                return self.parser(value)
            except ValueError as exc:
                raise self.fail(value, str(exc)) from None
        if self.kind is bool:
            return self._parse_bool(value)
        if self.kind is tuple:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not items or (self.length and len(items) != self.length):
                raise self.fail(value)
            try:
                return tuple(self._number(v, self.item) for v in items)
            except OptionError:
                raise self.fail(value) from None
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise self.fail(value)
            return value
        if isinstance(value, str) and value in self.words:
            return value
        return self._number(value, self.kind)

    def _parse_bool(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise self.fail(value)

    def _number(self, value: Any, kind: type) -> int | float:
        if isinstance(value, bool):
            raise self.fail(value)
        try:
            if kind is int:
                number = int(value) if not isinstance(value, float) else None
                if number is None:
                    raise ValueError
            else:
                number = float(value)
        except (TypeError, ValueError):
            raise self.fail(value) from None
        if kind is float and not math.isfinite(number):
            raise self.fail(value, "not finite")
        if self.low is not None and (number < self.low or (self.open_low and number == self.low)):
            raise self.fail(value)
        if self.high is not None and (number > self.high or (self.open_high and number == self.high)):
            raise self.fail(value)
        return number

    def show_default(self) -> str:
        if self.default_text:
            return self.default_text
        if self.default is None:
            return ""
        if self.kind is tuple:
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.default)
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def _number_text(value: float) -> str:
    """Integers exactly, other numbers in %g."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


@dataclass(frozen=True)
class Component:
    """One choice of a kind: its options, what it can do (``capabilities``), the values it implies
    for options of other sections when the user leaves them unset (``implies``: ``"section.name"``
    → value), and how to build it (``build``, signature chosen by the section's user)."""

    name: str
    help: str
    options: tuple[Option, ...] = ()
    capabilities: frozenset[str] = frozenset()
    implies: Mapping[str, Any] = field(default_factory=dict)
    build: Callable | None = None

    def can(self, capability: str) -> bool:
        return capability in self.capabilities


@dataclass
class Section:
    """The components of one kind. With several components, ``selector`` names the option that
    chooses one (its choices are the component names); a settings section has one component and
    no selector."""

    name: str
    help: str
    components: dict[str, Component]
    selector: Option | None = None

    def __post_init__(self) -> None:
        if self.selector is not None:
            object.__setattr__(self.selector, "section", self.name)
            if self.selector.choices != tuple(self.components):
                raise ValueError(f"section {self.name}: selector choices must be the component names")
        for option in self.options():
            if option.section and option.section != self.name:
                raise ValueError(f"option {option.name} already belongs to section {option.section}")
            object.__setattr__(option, "section", self.name)

    def options(self) -> list[Option]:
        """Every option of the section, once each (components may share an option), selector first."""
        seen: dict[str, Option] = {}
        if self.selector is not None:
            seen[self.selector.name] = self.selector
        for component in self.components.values():
            for option in component.options:
                if seen.setdefault(option.name, option) is not option:
                    raise ValueError(f"section {self.name}: two different options named {option.name}")
        return list(seen.values())

    def component(self, name: str | None = None) -> Component:
        if self.selector is None:
            return next(iter(self.components.values()))
        return self.components[name if name is not None else self.selector.default]

    def users(self, option: Option) -> list[str]:
        """The components that take ``option``."""
        return [c.name for c in self.components.values() if option in c.options]


def choice(name: str, entries: Iterable[Component], default: str, help: str, **kw) -> tuple[Option, dict]:
    """A selector option whose choices are the names of ``entries``, and the entries by name."""
    components = {c.name: c for c in entries}
    helps = "; ".join(f"{c.name}: {c.help}" for c in components.values())
    return Option(name, str, default, f"{help} ({helps}).", choices=tuple(components), **kw), components
