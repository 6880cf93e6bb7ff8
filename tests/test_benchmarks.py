"""Each benchmark runs at a tiny size so it cannot rot; no timing is asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_policy_benchmark_runs_and_prints_both_comparisons(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "policies.py"), "--calls", "500",
                             "--requests", "40"], capture_output=True, text=True, timeout=300,
                            env={"DECLARATIVE_MINER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "ratio          " in result.stdout and "ratio high/low" in result.stdout
