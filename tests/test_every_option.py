"""Every option of every config group, and every recipe, composes; each sets what its file says,
and the ones that need no chain, wallet of their own or model build a whole Miner."""

from __future__ import annotations

import os
import shutil
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


def hub_cache_holding(model_dir: Path, repo_id: str, cache: Path) -> Path:
    """A Hugging Face hub cache (its documented layout, as `hf download` leaves it) holding model_dir
    as repo_id's main revision."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache


def test_sweeps_over_every_recipe_and_every_policy_validate_every_job(tmp_path, home, tiny_model):
    # The llama recipe's model is loaded by validate: the tiny model stands in its hub id's cache slot,
    # offline, as on a miner where `hf download` was run once. openai's server is not needed to validate.
    transformers = OmegaConf.load(CONF_DIR / "prompt" / "transformers.yaml")
    cache = hub_cache_holding(tiny_model, transformers.model, tmp_path / "hub")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    every_recipe = run_cli("-m", f"home={home}", "mode=validate", "+recipe=glob(*)", cwd=tmp_path, env=env)
    assert every_recipe.returncode == 0, every_recipe.stdout[-3000:] + every_recipe.stderr[-3000:]
    assert every_recipe.stdout.count("the config is valid") == len(recipes())
    assert every_recipe.stdout.count(f"prompt     {transformers._target_}") == 1  # llama's
    every_policy = run_cli("-m", f"home={home}", "mode=validate", "blacklist=glob(*)", "priority=glob(*)",
                           cwd=tmp_path)
    assert every_policy.returncode == 0, every_policy.stderr[-3000:]
    pairs = len(list((CONF_DIR / "blacklist").glob("*.yaml"))) * len(list((CONF_DIR / "priority").glob("*.yaml")))
    assert every_policy.stdout.count("the config is valid") == pairs
