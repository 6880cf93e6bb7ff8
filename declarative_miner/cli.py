"""The command line: the only place that reads argv and chooses exit codes."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from . import config
from .errors import ConfigError
from .files import PRIVATE_UMASK
from .schema import Mode

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode (server/metrics.py)

log = logging.getLogger("declarative_miner")

EXIT_CONFIG = 2
_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}
_VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                 "--config-dir", "-cd", "--experimental-rerun"}


def fail(error: ConfigError) -> None:
    """Print every config problem, one per line, and exit 2 (no traceback)."""
    print("declarative_miner: the config has problems:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def _user_overrides(argv: list[str]) -> list[str]:
    found, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in _VALUED_FLAGS:
            skip = True
        elif not token.startswith("-") and not token.lstrip("+~").startswith(("hydra.", "hydra/")):
            found.append(token)
    return found


def _prevalidate(argv: list[str]) -> None:
    """Compose each job before Hydra runs, so a bad override reads `key: problem`, exit 2."""
    if _INFO_FLAGS.intersection(argv):
        return
    overrides = _user_overrides(argv)
    try:
        jobs = config.split_sweep(overrides) if {"-m", "--multirun"} & set(argv) else [overrides]
        for job in jobs:
            config.compose(job)
    except ConfigError as error:
        fail(error)
    except Exception as exc:  # a sweep syntax Hydra itself will report
        log.debug("pre-validation skipped: %s", exc)


def _share_metrics(cfg: DictConfig) -> None:
    """Several workers add their metrics up in files (prometheus_client's multiprocess mode), which
    must be chosen before prometheus_client is imported: here, before the miner is."""
    if cfg.mode == Mode.serve and cfg.axon.workers > 1 and cfg.metrics.port is not None:
        directory = Path(cfg.home).expanduser() / "run" / "metrics"
        shutil.rmtree(directory, ignore_errors=True)  # a previous run's files would be counted again
        directory.mkdir(parents=True)
        os.environ[MULTIPROCESS_DIRECTORY] = str(directory)


@hydra.main(config_path=str(config.CONF_DIR), config_name=config.PRIMARY, version_base="1.3")
def _job(cfg: DictConfig) -> Optional[float]:
    _share_metrics(cfg)
    from .build import check_serving
    from .miner import Miner  # imported here so --help stays fast

    try:
        if cfg.mode == Mode.eval:
            return _evaluate(cfg)
        miner = Miner(cfg)
        if miner.settings.mode.value == "validate":
            check_serving(miner._parts)
            print("declarative_miner: the config is valid; it would run:")
            print(miner.summary())
            miner.close()
            return
        miner.run()
    except ConfigError as error:
        fail(error)


def _evaluate(cfg: DictConfig) -> float:
    """Run `mode=eval`; returns the sweep objective (what an Optuna sweeper maximises)."""
    from .eval.runner import evaluate, objective
    from .summary import METRICS

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    metrics = evaluate(cfg, output_dir, list(hydra_cfg.overrides.task))
    latency, quality = metrics["latency_ms"] or {}, metrics["quality"]
    print(f"declarative_miner: {metrics['answered']}/{metrics['requests']} answered, errors {metrics['errors'] or 'none'}, "
          f"p50 {latency.get('p50')} ms, p95 {latency.get('p95')} ms, relevance {quality['relevance']}, "
          f"contains {quality['contains']}: {output_dir / METRICS}")
    return objective(metrics, cfg.eval.max_p95_ms)


def main() -> None:
    """Entry point of `python -m declarative_miner` and the `declarative-miner` script."""
    os.umask(PRIVATE_UMASK)  # wallets, caches and replay stores are the operator's alone
    config.register()
    _prevalidate(sys.argv[1:])
    _job()
