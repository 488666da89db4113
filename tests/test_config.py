"""The registries, the run configuration and the options generated from them."""
import ast
import math
from pathlib import Path

import click
import pytest

from dipcert.cli import COMMANDS, main, option_reference
from dipcert.components import ALL_SECTIONS, RUN_SECTIONS
from dipcert.config import ConfigError, RunConfig, dump_toml, load_config_file
from dipcert.registry import Option, OptionError

SRC = Path(__file__).resolve().parents[1] / "src" / "dipcert"
COMMAND_MODULES = ("cli.py", "solve.py", "experiments/__init__.py")


def _cli_params(name: str) -> list:
    return [p for p in main.commands[name].params
            if not isinstance(p, click.Argument) and p.name not in ("config_file", "help")]


def test_every_cli_option_maps_to_exactly_one_registry_option_and_back():
    registry = {f"{o.section}__{o.name}": o for s in ALL_SECTIONS for o in s.options()}
    used = set()
    for name in COMMANDS:
        params = _cli_params(name)
        flags = [opt for p in params for opt in p.opts]
        assert len(flags) == len(set(flags)), f"{name}: a flag is declared twice"
        for param in params:
            assert param.name in registry, f"{name} {param.opts}: no registry option"
            option = registry[param.name]
            assert param.opts == [option.cli_flag, *option.aliases]
            used.add(param.name)
    assert used == set(registry), f"registry options no command takes: {set(registry) - used}"


def _string_collections(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and len(node.elts) >= 2:
            if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                yield node, {e.value for e in node.elts}


def test_no_command_module_declares_a_choice_list_or_a_default():
    choices = {c for s in ALL_SECTIONS for o in s.options() for c in o.choices}
    for module in COMMAND_MODULES:
        tree = ast.parse((SRC / module).read_text())
        for node, strings in _string_collections(tree):
            assert len(strings & choices) < 2, f"{module}:{node.lineno} declares a choice list {sorted(strings)}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "option":
                for kw in node.keywords:
                    if kw.arg == "default":
                        assert isinstance(kw.value, ast.Constant) and kw.value.value is None, \
                            f"{module}:{node.lineno} declares a default"
                    assert kw.arg != "type" or not isinstance(kw.value, ast.Call) or \
                        getattr(kw.value.func, "attr", "") != "FloatRange", f"{module}:{node.lineno} declares a range"


def test_options_of_one_section_have_distinct_flags():
    for section in ALL_SECTIONS:
        names = [o.name for o in section.options()]
        assert len(names) == len(set(names))


@pytest.mark.parametrize("option, raw, expected", [
    (Option("x", float, 1.0, "", low=0, open_low=True), "2.5", 2.5),
    (Option("x", float, 1.0, "", low=0, words=("auto",)), "auto", "auto"),
    (Option("x", int, 1, "", low=1), "7", 7),
    (Option("x", int, 1, "", low=1), 7, 7),
    (Option("x", tuple, (1.0, 1.0), "", length=2, low=0, open_low=True), "2,3", (2.0, 3.0)),
    (Option("x", tuple, (1.0, 1.0), "", length=2), [2, 3], (2.0, 3.0)),
    (Option("x", bool, False, ""), "true", True),
    (Option("x", str, "a", "", choices=("a", "b")), "b", "b"),
])
def test_option_parses(option, raw, expected):
    assert option.parse(raw) == expected


@pytest.mark.parametrize("option, raw", [
    (Option("x", float, 1.0, "", low=0, open_low=True), "0"),
    (Option("x", float, 1.0, "", low=0, open_low=True), "inf"),
    (Option("x", float, 1.0, "", low=0), "nan"),
    (Option("x", float, 1.0, "", high=1, open_high=True), "1"),
    (Option("x", int, 1, "", low=1), "1e12"),
    (Option("x", int, 1, "", low=1), 2.0),
    (Option("x", int, 1, "", low=1), True),
    (Option("x", tuple, (1.0, 1.0), "", length=2, low=0, open_low=True), "-1,1"),
    (Option("x", tuple, (1.0, 1.0), "", length=2), "1"),
    (Option("x", bool, False, ""), "maybe"),
    (Option("x", str, "a", "", choices=("a", "b")), "c"),
])
def test_option_refuses_with_its_flag(option, raw):
    with pytest.raises(OptionError, match="--x: expected"):
        option.parse(raw)


def test_signal_implies_its_defaults_and_user_values_win():
    synthetic = RunConfig.build({"problem": {"signal": "gaussian"}})
    assert (synthetic.operator.name, synthetic.run.dtype, synthetic.network.train) == ("gaussian", "float64", "W")
    assert (synthetic.training.iters, synthetic.training.loss_tol, synthetic.operator.m) == (100_000, 1e-14, 5)
    assert synthetic.training.record_every == 50
    image = RunConfig.build({"run": {"dtype": "float64"}, "network": {"network": "two-layer", "train": "V"}})
    assert (image.operator.name, image.run.dtype, image.network.train, image.training.iters) == ("blur", "float64", "V", 500)
    default = RunConfig.build()  # images default to the Deep Decoder, which implies Adam and 3000 iterations
    assert (default.network.name, default.method.name, default.training.iters) == ("deep-decoder", "adam", 3000)
    assert synthetic.network.name == "two-layer" and synthetic.method.name == "gd"
    inna = RunConfig.build({"method": {"method": "inna"}})
    c1 = RunConfig.build({"method": {"method": "gradient-difference"}})
    assert (inna.method.beta, c1.method.beta) == ("auto", 0.0)


@pytest.mark.parametrize("given, fragment", [
    ({"problem": {"n": 3}}, "--n does not apply to --signal image, the default here (it is an option of --signal gaussian)"),
    ({"operator": {"operator": "gaussian", "blur_sigma": 2}}, "--blur-sigma does not apply to --operator gaussian"),
    ({"method": {"momentum": 0.5}}, "--momentum does not apply to --method adam"),
    ({"network": {"width": 100}}, "--width does not apply to --network deep-decoder, the default here (it is an option "
                                  "of --network two-layer)"),
    ({"network": {"network": "skip", "width": 100}}, "--width does not apply to --network skip (it is an option"),
    ({"problem": {"signal": "gaussian"}, "operator": {"operator": "blur"}}, "needs --operator gaussian"),
    ({"operator": {"blur_sigma": 100}}, "wider than the image (64 pixels)"),
    ({"loss": {"loss": "logistic"}}, "use --noise one-bit"),
    ({"loss": {"loss": "kl"}, "noise": {"noise_std": 5}}, "use --noise poisson"),
    ({"method": {"method": "adam", "step": "certified"}}, "certified exists for gd only"),
    ({"nosuch": {}}, "unknown section [nosuch]"),
    ({"method": {"nosuch": 1}}, "unknown option 'nosuch' in [method]"),
    ({"run": {"device": "meta"}}, "--device: allowed: cpu, cuda, cuda:N, mps"),
])
def test_build_refuses_with_a_message(given, fragment):
    with pytest.raises(ValueError) as info:
        RunConfig.build(given)
    assert fragment in str(info.value)


def test_dict_and_toml_round_trip(tmp_path):
    config = RunConfig.build({"problem": {"size": "32x24"}, "operator": {"operator": "inpainting"},
                              "method": {"method": "inna", "alpha": 0.5}, "certificate": {"corollary_constants": "2,3"}})
    values = config.to_dict()
    assert RunConfig.build(values).to_dict() == values
    path = tmp_path / "run.toml"
    path.write_text(dump_toml(values))
    assert RunConfig.build(load_config_file(path)).to_dict() == values
    assert values["problem"]["size"] == [32, 24] and values["certificate"]["lipschitz_form"] is None


def test_config_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[operator\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.toml")
    flat = tmp_path / "flat.toml"
    flat.write_text("width = 3\n")
    with pytest.raises(ConfigError, match="must hold sections"):
        load_config_file(flat)


def test_run_sections_default_config_is_valid_everywhere():
    config = RunConfig.build()
    assert set(config.to_dict()) == {s.name for s in RUN_SECTIONS}
    assert all(not (isinstance(v, float) and math.isnan(v)) for s in config.to_dict().values() for v in s.values())


def test_readme_option_reference_is_generated_from_the_registry():
    readme = (SRC.parents[1] / "README.md").read_text()
    start, end = "<!-- options:start -->", "<!-- options:end -->"
    assert start in readme and end in readme
    section = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert section == option_reference().strip(), "regenerate with: make options"
