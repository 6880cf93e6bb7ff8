"""One summary for a sweep of `mode=eval` jobs: a table, summary.csv and summary.png.

Written by Hydra when a `-m` sweep ends (the `sweep_summary` callback in conf/miner.yaml), and
rebuilt by hand from any sweep directory:

    python -m declarative_miner.summary multirun/2026-11-25/14-02-31
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .config import chosen

log = logging.getLogger(__name__)

METRICS = "metrics.json"
COLUMNS = ("job", "overrides", "requests", "answered", "errors", "p50_ms", "p95_ms", "p99_ms", "throughput_rps",
           "tokens_per_s", "cache_hits", "relevance", "exact", "contains")


FAILED = "failed.json"  # what a job that failed left instead of its metrics


def jobs(sweep_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(job number, metrics) of each job of the sweep that wrote metrics, in job order."""
    paths = sorted(sweep_dir.glob(f"*/{METRICS}"), key=lambda p: (len(p.parent.name), p.parent.name))
    return [(path.parent.name, json.loads(path.read_text())) for path in paths]


def record_failure(output_dir: Path, overrides: Sequence[str], error: str) -> None:
    """Leave, in a failed job's directory, what the summary names: its overrides and why it failed."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / FAILED).write_text(json.dumps({"overrides": list(overrides), "error": error}))


def failures(sweep_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(job number, {overrides, error}) of each job of the sweep that failed, in job order."""
    paths = sorted(sweep_dir.glob(f"*/{FAILED}"), key=lambda p: (len(p.parent.name), p.parent.name))
    return [(path.parent.name, json.loads(path.read_text())) for path in paths]


def common(found: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """The overrides every job shared (none when there is a single job)."""
    overrides = [metrics.get("overrides", []) for _, metrics in found]
    if len(overrides) < 2:
        return []
    shared = set.intersection(*map(set, overrides))
    return [override for override in overrides[0] if override in shared]


def rows(found: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per job; `overrides` holds only those that differ between jobs."""
    shared, table_rows = set(common(found)), []
    for job, metrics in found:
        latency, quality = metrics["latency_ms"] or {}, metrics["quality"]
        table_rows.append({
            "job": job, "overrides": " ".join(o for o in metrics.get("overrides", []) if o not in shared),
            "requests": metrics["requests"], "answered": metrics["answered"],
            "errors": " ".join(f"{status}x{count}" for status, count in sorted(metrics["errors"].items())),
            "p50_ms": latency.get("p50"), "p95_ms": latency.get("p95"), "p99_ms": latency.get("p99"),
            "throughput_rps": metrics["throughput_rps"], "tokens_per_s": metrics["tokens_per_s"],
            "cache_hits": metrics["cache_hits"], "relevance": quality["relevance"], "exact": quality["exact"],
            "contains": quality["contains"],
        })
    return table_rows


def table(found: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    cells = [[_cell(row[column]) for column in COLUMNS] for row in found]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(COLUMNS)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(COLUMNS, widths))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def write(sweep_dir: Path) -> Optional[str]:
    """Write summary.csv and summary.png into `sweep_dir`; returns the table (None: no eval jobs)."""
    found, failed = jobs(sweep_dir), failures(sweep_dir)
    if not found and not failed:
        return None
    table_rows = rows(found) + [{**dict.fromkeys(COLUMNS), "job": job, "overrides": " ".join(f["overrides"]),
                                 "errors": f"failed: {f['error']}"} for job, f in failed]
    table_rows.sort(key=lambda row: (len(row["job"]), row["job"]))
    with open(sweep_dir / "summary.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table_rows)
    _plot(table_rows, sweep_dir / "summary.png")
    return f"every job: {' '.join(common(found)) or '(no shared overrides)'}\n{table(table_rows)}"


def _plot(found: Sequence[dict[str, Any]], path: Path) -> None:
    """Quality against p95 latency, one labelled point per job."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        from matplotlib import pyplot
    except ImportError:
        log.warning("summary.png needs matplotlib: pip install '.[eval]' in the clone")
        return
    figure, axes = pyplot.subplots(figsize=(8, 5))
    for row in found:
        x, y = row["p95_ms"], row["relevance"]
        if x is None or y is None:
            continue
        axes.scatter([x], [y])
        axes.annotate(row["overrides"] or f"job {row['job']}", (x, y), fontsize=7, xytext=(4, 4),
                      textcoords="offset points")
    axes.set_xlabel("p95 latency (ms)")
    axes.set_ylabel("relevance (mean cosine, MiniLM)")
    axes.set_title(f"{path.parent.parent.name}/{path.parent.name}: quality against p95 latency", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


class SweepSummary(Callback):
    """Hydra callback: after each job of a `-m` sweep, the summary of the `mode=eval` jobs so far (so a
    job that fails leaves the others' summary, and its own failure named in it); printed at the end."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        if job_return.status == JobStatus.FAILED:
            try:
                job_return.return_value  # noqa: B018 - a failed job's value is its exception, raised
            except Exception as error:
                record_failure(Path(config.hydra.runtime.output_dir), chosen(job_return.overrides),
                               f"{type(error).__name__}: {error}")
        write(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        written = write(sweep_dir)
        if written is not None:
            print(written)
            print(f"declarative_miner: summary of {sweep_dir}: summary.csv, summary.png")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m declarative_miner.summary SWEEP_DIR`: rebuild a sweep's summary."""
    parser = argparse.ArgumentParser(prog="python -m declarative_miner.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    written = write(args.sweep_dir)
    if written is None:
        print(f"no {METRICS} under {args.sweep_dir}/*/ (was it a sweep with mode=eval?)")
        return 2
    print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
