"""Each benchmark runs at a tiny size so it cannot rot; no timing is asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def test_the_policy_benchmark_runs_and_prints_both_comparisons(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "policies.py"), "--calls", "500",
                             "--requests", "40"], capture_output=True, text=True, timeout=300,
                            env={"DECLARATIVE_MINER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "ratio          " in result.stdout and "ratio high/low" in result.stdout


def test_the_app_benchmark_runs_every_variant_and_its_profile_at_a_tiny_size():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "app.py"), "--batch", "5", "--rounds", "1",
                             "--profile", "--against", "HEAD"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ("floor (verify and echo)", "miner, default config", "miner, cache.ttl=0", "miner, blacklist=open",
                "miner at HEAD", "Ordered by: cumulative time"):
        assert row in result.stdout, result.stdout


@pytest.mark.timeout(360)  # some twenty servers start and stop, each row by turns
def test_the_serving_benchmark_runs_every_row_at_a_tiny_size(v10_python):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serving.py"), "--requests", "40", "--reps", "1",
                             "--concurrency", "1,2", "--v10-python", str(v10_python), "--against", "HEAD"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ("floor btauth/1 c=2", "miner btauth/1 c=2", "miner at HEAD btauth/1 c=2", "miner v10 route c=2",
                "floor v10 c=2", "miner v10 CPU/request vs v10 floor",
                "floor at the miner's req/s c=2", "vs the floor at the miner's req/s",
                "miner blacklisted c=2",
                "validator under 20-caller flood, never sheds", "validator under forged claims, never sheds",
                "validator under 20-caller flood, sheds (default)", "validator under forged claims, sheds (default)",
                "validator, 600 held connections", "forged v10 1 MB", "stock v10 Axon c=2",
                "miner CPU/request vs floor", "blacklisted vs served", "503s under 600 held connections",
                "floor on h11 btauth/1 c=2", "vs the floor on h11", "miner state.store=memory v10 c=2",
                "with state.store=memory",
                "validator under strangers from 20 addresses, sheds (default)",
                "validator under forged claims from 20 addresses, sheds (default)"):
        assert row in result.stdout, result.stdout


def test_a_ratio_over_a_baseline_measured_as_zero_prints_no_number():
    """CPU is read in 10 ms ticks: a tiny run can measure 0 for the baseline (it crashed one run in five)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serving import ratio

    assert ratio(1.0, 0.0).strip().startswith("n/a") and ratio(3.0, 2.0) == "  1.50x"


def test_rows_run_by_turns_and_a_ratio_is_the_median_of_the_turns_ratios():
    """A burst of load on the shared machine lands on both rows of a ratio, not one (it moved the
    miner-over-floor ratio from 1.46x to 2.75x between runs of one tree, checked by hand)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serving import interleaved, paired

    calls, figures = [], {"a": iter([1.0, 3.0, 4.0]), "b": iter([3.0, 3.0, 12.0])}

    def run(name: str):
        def one() -> dict:
            calls.append(name)
            return {"rps": 1.0, "p50": 1.0, "p99": 1.0, "cpu_ms": next(figures[name]), "gen_ms": 0.0, "rss": 0.0,
                    "statuses": {200: 1}}
        return one

    rows = interleaved(3, {"a": run("a"), "b": run("b")})
    assert calls == ["a", "b"] * 3
    assert paired(rows["b"], rows["a"]) == "  3.00x"  # turns 3, 1, 3; the medians' ratio would say 1.00
    assert paired(rows["b"], {"runs": [{"cpu_ms": 0.0}] * 3}).strip().startswith("n/a")


def test_the_model_benchmark_runs_at_a_tiny_size(tmp_path, tiny_model):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model.py"), "--hidden", "32", "--layers", "2",
                             "--tokens", "4", "--requests", "2", "--threads", "1", "--concurrency", "1,2", "--turns", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ("generate() by hand, whole answer", "through the miner, first chunk", "overhead of the miner",
                "c=2: whole answer"):
        assert row in result.stdout, result.stdout


def test_the_openai_server_benchmark_runs_at_a_tiny_size(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "openai_server.py"), "--hidden", "32",
                             "--layers", "2", "--tokens", "4", "--requests", "2", "--concurrency", "1,2",
                             "--turns", "1", "--pace", "0.001"],
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    for server in ("transformers serve, random Llama 32 x 2", "paced OpenAI-compatible server"):
        assert server in result.stdout, result.stdout
    assert result.stdout.count("first chunk added by the miner") == 4, result.stdout  # 2 servers x 2 levels


def test_the_kill_benchmark_runs_at_a_tiny_size(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kills.py"), "--kills", "3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "next request after each served     3/3" in result.stdout, result.stdout
