"""The config tree: composition, schema errors, cross-field checks, recipes, argparse parity."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from declarative_miner.config import compose, recipes, split_sweep
from declarative_miner.errors import ConfigError
from declarative_miner.miner import Miner

from .conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


def problems(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        compose(overrides)
    return [str(p) for p in caught.value.problems]


def test_a_typo_in_a_key_names_the_full_key_and_the_keys_expected():
    assert problems("cache.tll=30") == [
        "cache.tll: unknown key (got cache.tll=30; expected a group of keys: ttl, directory, on_hit, scope, namespace, max_entries, clear, size_limit, sync_writes)"]


def test_a_wrong_type_names_the_key_the_value_and_the_type():
    assert problems("axon.port=abc") == ["axon.port: invalid value (got abc; expected int)"]


def test_every_bad_override_is_reported_together():
    assert [p.split(":")[0] for p in problems("cache.tll=30", "axon.port=abc", "cache.on_hit=maybe")] == [
        "cache.tll", "axon.port", "cache.on_hit"]


def test_keys_a_recipe_brings_are_not_reported_when_another_override_is_wrong():
    assert [p.split(":")[0] for p in problems("+recipe=llama", "prompt.max_new_tokens=8", "cache.tll=30")] == [
        "cache.tll"]


def test_an_unknown_recipe_lists_the_recipes_there_are():
    assert problems("+recipe=nope") == ["recipe: no such option (got nope; expected one of echo, llama, openai, template_dummy)"]


def test_a_recipe_without_its_plus_says_to_add_the_plus():
    assert problems("recipe=echo") == [
        "recipe: is not chosen by default, so it is added with a + (got recipe=echo; expected +recipe=echo)"]


def test_an_unknown_group_option_is_named():
    [problem] = problems("blacklist=nobody")
    assert problem.startswith("blacklist: no such option (got nobody; expected one of ")


@pytest.mark.parametrize("recipe", recipes())
def test_every_recipe_composes_and_validates(recipe, home, request):
    # The llama recipe's default model is a hub download: here it gets the tests' own tiny one.
    model = [f"prompt.model={request.getfixturevalue('tiny_model')}"] if recipe == "llama" else []
    cfg = compose([f"home={home}", f"+recipe={recipe}", *model])
    miner = Miner(cfg)
    try:
        summary = miner.summary()
        assert f"prompt     {cfg.prompt._target_}" in summary  # the recipe's model answers
        assert f"{cfg.axon.max_concurrency} at once" in summary
        # every recipe but these two picks another model; template_dummy adds a request type instead
        assert cfg.prompt._target_ != compose([f"home={home}"]).prompt._target_ or recipe in ("echo", "template_dummy")
    finally:
        miner.close()


def test_cross_field_problems_are_collected_with_build_problems(home):
    with pytest.raises(ConfigError) as caught:
        Miner(compose([f"home={home}", "axon.port=70000", "axon.max_concurrency=0",
                       "prompt._target_=nowhere.at_all", "+blacklist.rules.min_stake.bogus=1"]))
    keys = [p.key for p in caught.value.problems]
    assert keys == ["axon.port", "axon.max_concurrency", "blacklist.rules.min_stake.bogus", "prompt._target_"]


def test_add_args_options_compose_the_same_tree_as_hydra_overrides():
    parser = argparse.ArgumentParser()
    Miner.add_args(parser)
    namespace = parser.parse_args(["--cache.ttl", "30", "--network.netuid", "7",
                                   "--axon.require_receiver", "false", "--cache.on_hit", "reuse"])
    from_args = Miner.config_from_args(namespace)
    from_hydra = compose(["cache.ttl=30", "network.netuid=7", "axon.require_receiver=false", "cache.on_hit=reuse"])
    assert OmegaConf.to_container(from_args) == OmegaConf.to_container(from_hydra)
    assert from_args.cache.ttl == 30 and from_args.network.netuid == 7


def test_add_args_help_comes_from_the_schema_fields_even_without_source(tmp_path):
    """An install may ship only bytecode: the help is the fields' metadata, not schema.py's text."""
    package = tmp_path / "declarative_miner"
    shutil.copytree(REPO / "declarative_miner", package, ignore=shutil.ignore_patterns("__pycache__"))
    for shipped in ("conf", "recipes"):
        shutil.copytree(REPO / shipped, package / shipped)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-b", str(package)], check=True)
    for source in package.rglob("*.py"):
        source.unlink()
    shown = subprocess.run(
        [sys.executable, "-c", "import argparse; from declarative_miner.miner import Miner; "
         "p = argparse.ArgumentParser(); Miner.add_args(p); print(p.format_help())"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "seconds a prompt counts as recent; 0 disables the cache" in " ".join(shown.stdout.split())


def test_add_args_help_comes_from_the_schema():
    parser = argparse.ArgumentParser()
    Miner.add_args(parser)
    text = parser.format_help()
    assert "--cache.ttl CACHE.TTL" in text
    assert "seconds a prompt counts as recent; 0 disables the cache" in " ".join(text.split())
    with pytest.raises(SystemExit):
        parser.parse_args(["--axon.port", "abc"])


def test_a_basic_sweep_splits_into_its_jobs():
    assert split_sweep(["+recipe=echo", "cache.ttl=0,30"]) == [
        ["+recipe=echo", "cache.ttl=0"], ["+recipe=echo", "cache.ttl=30"]]


def test_cli_exits_2_naming_the_key_without_a_traceback(tmp_path):
    result = run_cli("cache.tll=30", cwd=tmp_path)
    assert result.returncode == 2
    assert "cache.tll: unknown key (got cache.tll=30;" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_validate_mode_builds_every_part_and_exits_0(tmp_path, home):
    result = run_cli(f"home={home}", "mode=validate", "+recipe=echo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "blacklist  deny_hotkeys -> allow_hotkeys -> registered -> validator_permit -> min_stake" in result.stdout
    assert "prompt     declarative_miner.prompts.echo.echo" in result.stdout


def test_cli_validate_mode_reports_build_problems_with_exit_2(tmp_path, home):
    result = run_cli(f"home={home}", "mode=validate", "priority.strategy=no.such.strategy", cwd=tmp_path)
    assert result.returncode == 2
    assert "priority.strategy: cannot import 'no.such.strategy'" in result.stderr
    assert "or set PYTHONPATH to its directory" in result.stderr  # an operator's own module, not found


def test_cli_help_lists_the_groups_and_the_recipes(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "recipe: echo" in result.stdout
    assert "cache: disk" in result.stdout


def test_cli_cfg_job_prints_the_composed_tree_with_overrides(tmp_path):
    result = run_cli("--cfg", "job", "cache.ttl=30", "+recipe=echo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert OmegaConf.create(result.stdout).cache.ttl == 30


def test_cli_multirun_validates_every_job(tmp_path, home):
    result = run_cli("-m", f"home={home}", "mode=validate", "cache.ttl=0,30", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("the config is valid") == 2
    assert "cache      off" in result.stdout and "cache      ttl 30 s" in result.stdout


def test_a_component_missing_its_extra_names_the_install_command(home, tmp_path, monkeypatch):
    (tmp_path / "needs_extra.py").write_text(
        "from declarative_miner.imports import MissingDependency\n"
        "raise MissingDependency('the demo prompt', 'torch', \"pip install 'declarative-miner[llama]'\")\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        Miner(compose([f"home={home}", "prompt._target_=needs_extra.Backend"]))
    assert [str(p) for p in caught.value.problems] == [
        "prompt._target_: the demo prompt needs torch, which is not installed "
        "(expected: pip install 'declarative-miner[llama]')"]


@pytest.mark.parametrize("override, message", [
    ("axon.ip=999.1.1.1", "axon.ip: not an address (got 999.1.1.1; expected an IPv4 or IPv6 address, or localhost)"),
    ("axon.external_ip=miner.example", "axon.external_ip: not an address (got miner.example;"),
    ("axon.replay_store=redis://127.0.0.1:1/0", "axon.replay_store: cannot open it (got redis://127.0.0.1:1/0: "
                                                "the replay store is unreachable (ConnectionError)"),
    ("state.store=redis://127.0.0.1:1/0", "state.store: cannot open it (got redis://127.0.0.1:1/0: "
                                          "the replay store is unreachable (ConnectionError)"),
    ("axon.wire_formats=[btauth,smoke]", "axon.wire_formats: out of range (got ['btauth', 'smoke']; expected a "
                                         "non-empty list of v10, epistula, btauth)"),
    ("axon.wire_formats=[]", "axon.wire_formats: out of range (got []; expected a non-empty list"),
])
def test_validate_checks_what_the_server_would_use(tmp_path, home, override, message):
    """`mode=validate` exits 2 for what would only fail once serving: an address nobody can bind,
    a Redis nobody answers at, a wire format that does not exist."""
    result = run_cli(f"home={home}", "mode=validate", override, cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr


@pytest.mark.parametrize("override, message", [
    ("prompt._target_=operator.add", "prompt.b: missing (got none; expected a value for b)"),
    ("priority.strategy=operator.not_", "priority.strategy: operator.not_ does not take these arguments (got none; "
                                        "too many positional arguments)"),
])
def test_a_callable_whose_whole_signature_does_not_fit_its_calls_is_refused_at_start(home, override, message):
    """`def needs(request, model)` built without `model` would fail on every request: refuse it now."""
    with pytest.raises(ConfigError) as raised:
        Miner(compose([f"home={home}", override]))
    assert message in str(raised.value)


def test_run_logs_go_under_home_never_into_the_working_directory(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DECLARATIVE_MINER_HOME"} | {"HOME": str(home)}
    result = run_cli("mode=validate", cwd=cwd, env=env)  # home is its default, ~/.declarative_miner
    assert result.returncode == 0, result.stderr
    assert list(cwd.iterdir()) == []  # no outputs/, no directory named ~
    [run] = (home / ".declarative_miner" / "runs").glob("*/*")  # home/runs/DATE/TIME, ~ expanded
    assert (run / ".hydra" / "config.yaml").is_file()
