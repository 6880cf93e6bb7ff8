"""`pip install .` (not editable) ships conf/ and recipes/ and behaves like the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import on_free_ports

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project installed from a wheel into a directory of its own (dependencies shared)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    return target


def _run(installed: Path, *command: str, cwd: Path):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_wheel_carries_conf_and_recipes(installed):
    package = installed / "declarative_miner"
    assert (package / "conf" / "miner.yaml").is_file()
    assert (package / "recipes" / "echo.yaml").is_file()
    assert {path.stem for path in (package / "recipes").glob("*.yaml")} == {"echo", "llama", "openai", "template_dummy"}
    assert (package / "conf" / "search" / "optuna.yaml").is_file()
    assert (package / "conf" / "synapses" / "prompting.yaml").is_file()
    assert (package / "data" / "prompts.jsonl").is_file()  # mode=eval's built-in dataset


def test_the_console_script_lists_the_recipe_group_from_another_directory(installed, tmp_path):
    result = _run(installed, str(installed / "bin" / "declarative-miner"), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "recipe: echo" in result.stdout


def test_the_installed_package_validates_a_recipe_like_the_checkout(installed, tmp_path):
    probe = _run(installed, sys.executable, "-c", "import declarative_miner; print(declarative_miner.__file__)",
                 cwd=tmp_path)
    assert probe.stdout.startswith(str(installed))
    result = _run(installed, sys.executable, "-m", "declarative_miner",
                  *on_free_ports([f"home={tmp_path}", "mode=validate", "+recipe=echo"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "prompt     declarative_miner.prompts.echo.echo" in result.stdout


def _own_config(directory: Path) -> None:
    """An operator's config directory: a recipe of its own and an option of the prompt group."""
    (directory / "recipe").mkdir(parents=True)
    (directory / "prompt").mkdir()
    (directory / "recipe" / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - override /prompt: shout\n"
                                                  "cache:\n  ttl: 30\n")
    (directory / "prompt" / "shout.yaml").write_text("_target_: tests.prompts.async_upper\n")


@pytest.mark.parametrize("how", ["home", "--config-dir", "hydra.searchpath"])
def test_the_operators_own_recipe_and_group_option_work_from_any_directory(installed, tmp_path, how):
    """The installed package, started from a directory that is not the clone (as pm2 and systemd do)."""
    home, own, elsewhere = tmp_path / "home", tmp_path / "mine", tmp_path / "elsewhere"
    _own_config(home / "conf" if how == "home" else own)
    elsewhere.mkdir()
    where = {"home": [], "--config-dir": ["--config-dir", str(own)],
             "hydra.searchpath": [f"hydra.searchpath=[file://{own}]"]}[how]
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(home), "PYTHONPATH": f"{installed}{os.pathsep}{ROOT}"}
    for overrides in (["+recipe=mine"], ["prompt=shout"]):
        result = subprocess.run([sys.executable, "-m", "declarative_miner", *where,
                                 *on_free_ports([*overrides, "mode=validate"])],
                                cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "prompt     tests.prompts.async_upper" in result.stdout
    listed = subprocess.run([sys.executable, "-m", "declarative_miner", *where, "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120).stdout
    assert "recipe: echo, llama, mine, openai" in listed and "prompt: echo, openai, shout" in listed
    mine = subprocess.run([sys.executable, "-m", "declarative_miner", *where,
                           *on_free_ports(["+recipe=mine", "mode=validate"])], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "ttl 30 s" in mine.stdout
