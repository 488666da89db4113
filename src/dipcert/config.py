"""One configuration for a run, built from the registries and checked before any work.

A :class:`RunConfig` holds, for every section of :data:`dipcert.components.RUN_SECTIONS`, the chosen
component and the values of the options that apply to it — nothing else. It is built from nested
values (a config file, or command-line options grouped by section) by :meth:`RunConfig.build`:

1. every given value is parsed by its option (type, range, choices);
2. a given option that does not apply to the chosen component is refused, naming the components
   that take it;
3. unset options get their default; a default of ``None`` is implied by the chosen components
   (e.g. ``--signal gaussian`` implies float64, ``train = W`` and 1e5 iterations) or by a rule below;
4. the combination is checked (:func:`check_combination`).

:meth:`RunConfig.to_dict` is what ``metrics.json`` stores; :func:`load_config_file` reads it back
(or a TOML file of the same shape), so ``dipcert solve --config out/metrics.json`` repeats a run.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .components import DTYPES, RUN_SECTIONS
from .registry import Component, Option, OptionError, Section

Values = dict[str, Any]


class ConfigError(ValueError):
    """A configuration that cannot run; the message says what is wrong and what is allowed."""


@dataclass(frozen=True)
class SectionConfig:
    """The chosen component of one section and its option values (read as attributes)."""

    section: Section
    component: Component
    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(f"{self.section.name} option {name!r} does not apply to {self.component.name}") from None

    @property
    def name(self) -> str:
        return self.component.name

    def can(self, capability: str) -> bool:
        return self.component.can(capability)


class RunConfig:
    """The resolved configuration of a run: ``config.operator.blur_sigma``, ``config.method.name``."""

    def __init__(self, sections: dict[str, SectionConfig]) -> None:
        self.sections = sections

    def __getattr__(self, name: str) -> SectionConfig:
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def build(cls, given: Mapping[str, Mapping[str, Any]] | None = None,
              sections: Iterable[Section] = RUN_SECTIONS, defaults: Mapping[str, Any] | None = None) -> "RunConfig":
        """The configuration from ``given`` (section → option → value); ``defaults`` (``"section.option"``
        → value) replace registry defaults (a command's own default, e.g. certify's step). A command's
        choice of component (certify's gd) is kept over what the components chosen before imply (a
        generator's Adam); its option defaults yield to them (the MLP implies the automatic step over
        certify's certified one)."""
        given = {name: dict(values) for name, values in (given or {}).items()}
        sections = {s.name: s for s in sections}
        for name in given:
            if name not in sections:
                raise ConfigError(f"unknown section [{name}]; allowed: {', '.join(sections)}")
        implied: dict[str, Any] = dict(defaults or {})
        commanded = set(implied)
        selectors = {section.selector.key for section in sections.values() if section.selector is not None}
        resolved = {}
        for name, section in sections.items():  # in order: a component may imply the next ones' defaults
            values = given.get(name, {})
            component = _chosen_component(section, values, implied)
            implied.update({key: value for key, value in component.implies.items()
                            if not (key in commanded and key in selectors)})
            resolved[name] = SectionConfig(section, component, _section_values(section, component, values, implied))
        config = cls(resolved)
        config._apply_rules()
        check_combination(config)
        return config

    def _apply_rules(self) -> None:
        """Defaults that follow from other values."""
        training = self.sections.get("training")
        if training is not None and training.values["record_every"] is None:
            training.values["record_every"] = max(1, training.iters // 2000)
        operator = self.sections.get("operator")
        if operator is not None and "m" in operator.values and operator.values["m"] is None:
            operator.values["m"] = self.signal_size

    @property
    def signal_size(self) -> int:
        """n, the size of x, known before any image is read."""
        problem = self.problem
        return problem.n if problem.name == "gaussian" else problem.size[0] * problem.size[1]

    @property
    def seeds(self) -> list[int]:
        return list(range(self.run.seed, self.run.seed + self.run.runs))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.run.dtype]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain values (tuples as lists): what metrics.json and config files hold."""
        out = {}
        for name, section in self.sections.items():
            values = {}
            if section.section.selector is not None:
                values[section.section.selector.name] = section.component.name
            for key, value in section.values.items():
                values[key] = list(value) if isinstance(value, tuple) else value
            out[name] = values
        return out


def _chosen_component(section: Section, values: Mapping[str, Any], implied: Mapping[str, Any]) -> Component:
    selector = section.selector
    if selector is None:
        return section.component()
    return section.component(selector.parse(values.get(selector.name, implied.get(selector.key, selector.default))))


def _section_values(section: Section, component: Component, given: Mapping[str, Any],
                    implied: Mapping[str, Any]) -> Values:
    options = {o.name: o for o in section.options()}
    values: Values = {}
    for key, raw in given.items():
        if key not in options:
            raise ConfigError(f"unknown option {key!r} in [{section.name}]; allowed: {', '.join(options)}")
        option = options[key]
        if option is section.selector:
            continue
        if option not in component.options:
            selector = section.selector
            users = ", ".join(section.users(option))
            chosen = "" if selector.name in given else ", the default here"
            raise ConfigError(f"{option.cli_flag} does not apply to {selector.cli_flag} {component.name}{chosen} "
                              f"(it is an option of {selector.cli_flag} {users})")
        values[key] = option.parse(raw)
    for option in component.options:
        if option.name not in values:
            default = implied.get(option.key, option.default)
            values[option.name] = option.parse(default) if default is not None else None
    return {option.name: values[option.name] for option in component.options}  # in the registry's order


def check_combination(config: RunConfig) -> None:
    """Refuse combinations of components that cannot run, before any work."""
    s = config.sections
    if "problem" in s and "operator" in s:
        if config.problem.name == "gaussian" and not config.operator.can("synthetic"):
            raise ConfigError(f"--signal gaussian needs --operator gaussian, got --operator {config.operator.name}")
        if config.problem.name == "image" and config.operator.name == "blur":
            side = max(config.problem.size)
            if config.operator.blur_sigma > side:
                raise ConfigError(f"--blur-sigma {config.operator.blur_sigma:g} is wider than the image "
                                  f"({side} pixels): use at most {side}")
    if "problem" in s and "operator" in s and config.operator.values.get("condition") is not None:
        if config.problem.name != "gaussian":
            raise ConfigError("--condition shapes the synthetic A of --signal gaussian; an image problem's "
                              "--operator gaussian has iid entries")
        if min(config.signal_size, config.operator.m) == 1 and config.operator.condition != 1:
            raise ConfigError(f"--condition {config.operator.condition:g} needs min(m, n) >= 2: an A with one "
                              "singular value has condition number 1")
    if "noise" in s and "loss" in s:
        loss, noise = config.loss, config.noise
        if loss.can("needs_labels") and not noise.can("labels"):
            raise ConfigError(f"--loss {loss.name} needs labels y = ±1: use --noise one-bit")
        if loss.can("needs_nonnegative") and not (noise.can("nonnegative") or
                                                  (noise.name == "gaussian" and noise.noise_std == 0)):
            raise ConfigError(f"--loss {loss.name} needs non-negative data (counts): use --noise poisson "
                              f"(or noiseless data)")
        if noise.name == "poisson" and "operator" in s and not config.operator.can("square"):
            if config.operator.name == "gaussian":
                raise ConfigError("--noise poisson needs A x̄ >= 0, which a Gaussian matrix does not give: "
                                  "use --operator blur, well-conditioned or inpainting")
    if "method" in s:
        method = config.method
        if method.values.get("step") == "certified" and not method.can("certified_step"):
            raise ConfigError(f"--step certified exists for gd only (1/(2L)); --method {method.name} has no "
                              "certified step")
    if "network" in s and "method" in s and config.method.values.get("step") == "certified":
        kl_exact = config.loss.name == "kl" and config.loss.kl_eps == 0
        if not config.network.can("certified_lipschitz") or config.loss.name == "logistic" or kl_exact:
            raise ConfigError("--step certified needs a proven bound on L: --network two-layer with --loss mse, "
                              "or --loss kl with --kl-eps > 0")
    if "stopping" in s and "method" in s and config.stopping.name == "certified" and not config.method.can("certifiable"):
        methods = [c.name for c in config.method.section.components.values() if c.can("certifiable")]
        raise ConfigError(f"--stop certified needs an a-priori certificate (Theorem III.1), which only --method "
                          f"{' or '.join(methods)} has; got --method {config.method.name}")
    if "network" in s and "problem" in s and config.network.can("needs_image") and config.problem.name != "image":
        raise ConfigError(f"--network {config.network.name} is a convolutional image generator: use --signal image")
    if "network" in s and "problem" in s and config.network.can("convolutional"):
        from .generators import GENERATORS

        try:  # the architecture fits the image (built on the meta device: nothing allocated)
            GENERATORS[config.network.name].sizes(config.problem.size, **config.network.values)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if ("network" in s and "method" in s and config.network.values.get("reg_noise_std")
            and config.method.can("ode")):
        raise ConfigError(f"--reg-noise-std redraws the network's input at every gradient evaluation: --method "
                          f"{config.method.name} integrates an ODE, which needs a deterministic vector field; use "
                          "--reg-noise-std 0 or a discrete method")
    if "certificate" in s and "loss" in s and "network" in s:
        form = config.certificate.lipschitz_form
        if form is not None and not config.network.can("certified_lipschitz"):
            raise ConfigError(f"--lipschitz-form applies to --network two-layer only (got {config.network.name})")


def load_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Nested values from a TOML file, or from the ``config`` of a ``metrics.json`` (or a JSON file
    of the same shape)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.__class__.__name__}: {exc}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            data = data.get("config", data) if isinstance(data, dict) else data
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"config file {path} must hold sections ([operator], [method], …) of option = value")
    return data


def dump_toml(values: Mapping[str, Mapping[str, Any]]) -> str:
    """A TOML text of nested values (strings, numbers, booleans, lists; ``None`` left out)."""
    lines = []
    for section, options in values.items():
        lines.append(f"[{section}]")
        for key, value in options.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string has JSON's escapes


__all__ = ["ConfigError", "OptionError", "RunConfig", "SectionConfig", "Option", "check_combination",
           "dump_toml", "load_config_file"]
