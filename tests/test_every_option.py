"""Every option of every config group, and every recipe, composes; each sets what its file says,
and the ones that need no chain, wallet of their own or model build a whole Miner."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from declarative_miner.config import CONF_DIR, RECIPES_DIR, compose, recipes
from declarative_miner.miner import Miner

from .conftest import run_cli

# Every group of the miner's own config: a group added later is tested without editing this file.
# (hydra/ and search/ configure Hydra's launchers and sweepers: tests/test_eval.py composes them.)
GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "search"))
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))]
# These reach outside the machine when built (a chain, ~/.bittensor, a model or a model server):
# composed and compared here; built by test_chain, test_transformers_model and test_openai_compatible.
NOT_BUILT = {("network", "finney"), ("network", "test"), ("network", "local"), ("wallet", "bittensor"),
             ("prompt", "transformers"), ("prompt", "openai")}


def leaves(node: dict, prefix: str = ""):
    """(dotted key, value) of every leaf of a YAML file's mapping, its defaults list left out."""
    for key, value in node.items():
        if key == "defaults":
            continue
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def assert_sets_what_its_file_says(cfg: DictConfig, file: Path, package: str) -> int:
    raw = OmegaConf.to_container(OmegaConf.load(file), resolve=False)
    checked = 0
    for key, value in leaves(raw):
        composed = OmegaConf.select(cfg, f"{package}{key}")
        composed = composed.name if isinstance(composed, Enum) else composed
        if isinstance(value, str) and "${" in value:
            assert composed is not None and "${" not in str(composed), key  # resolved
            continue
        expected = value
        actual = OmegaConf.to_container(composed) if OmegaConf.is_config(composed) else composed
        assert actual == expected, f"{file.name}: {package}{key} is {actual!r}, the file says {expected!r}"
        checked += 1
    return checked


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_sets_its_keys_and_builds(group, option, home):
    cfg = compose([f"home={home}", f"{group}={option}"])
    assert assert_sets_what_its_file_says(cfg, CONF_DIR / group / f"{option}.yaml", f"{group}.") > 0
    if (group, option) in NOT_BUILT:
        return
    miner = Miner(cfg)
    try:
        summary = miner.summary()
        if group == "blacklist":
            rules = " -> ".join(cfg.blacklist.rules) or "none (open)"
            assert f"blacklist  {rules}" in summary
        if group == "priority":
            assert f"priority   {cfg.priority.strategy}" in summary
        if group == "axon":
            assert f"axon       http://{cfg.axon.ip}:{cfg.axon.port}" in summary
    finally:
        miner.close()


@pytest.mark.parametrize("recipe", recipes())
def test_every_recipe_sets_what_its_file_says(recipe, home):
    cfg = compose([f"home={home}", f"+recipe={recipe}"])
    assert_sets_what_its_file_says(cfg, RECIPES_DIR / f"{recipe}.yaml", "")
    defaults = OmegaConf.load(RECIPES_DIR / f"{recipe}.yaml").get("defaults", [])
    chosen = next((d["override /prompt"] for d in defaults if "override /prompt" in d), "echo")
    assert cfg.prompt._target_ == OmegaConf.load(CONF_DIR / "prompt" / f"{chosen}.yaml")._target_


def test_a_sweep_over_every_buildable_recipe_validates_every_job(tmp_path, home):
    buildable = [r for r in recipes() if r not in ("llama", "openai")]  # those need a model or its server
    result = run_cli("-m", f"home={home}", "mode=validate", f"+recipe={','.join(buildable)}",
                     "blacklist=glob(*)", "priority=glob(*)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = len(buildable) * len(list((CONF_DIR / "blacklist").glob("*.yaml"))) * len(
        list((CONF_DIR / "priority").glob("*.yaml")))
    assert result.stdout.count("the config is valid") == jobs
