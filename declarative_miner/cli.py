"""The command line: the only place that reads argv and chooses exit codes."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from . import config
from .errors import ConfigError
from .files import PRIVATE_UMASK
from .schema import Mode

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode (server/metrics.py)

log = logging.getLogger("declarative_miner")

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 75  # EX_TEMPFAIL: the config is fine, what it names did not answer; service managers restart
_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}
_VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                 "--config-dir", "-cd", "--experimental-rerun"}


def fail(error: ConfigError) -> None:
    """Print every config problem, one per line, and exit 2 (no traceback); 75 when every problem is
    of the moment (a chain that does not answer), which a service manager should try again."""
    print("declarative_miner: the config has problems:" if not error.transient else
          "declarative_miner: cannot start now (the config may be right):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    sys.exit(EXIT_UNREACHABLE if error.transient else EXIT_CONFIG)


def _user_overrides(argv: list[str]) -> list[str]:
    """The overrides that compose the miner's tree (Hydra's own settings left out, but where configs
    are found)."""
    found, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in _VALUED_FLAGS:
            skip = True
        elif not token.startswith("-") and (token.startswith(config.SEARCH_PATH + "=") or
                                            not token.lstrip("+~").startswith(("hydra.", "hydra/"))):
            found.append(token)
    return found


def _config_dirs(argv: list[str]) -> list[str]:
    return [value for flag, value in zip(argv, argv[1:]) if flag in ("--config-dir", "-cd")]


def with_own_config(argv: list[str]) -> list[str]:
    """`argv` with one `hydra.searchpath` that finds the operator's own configs: home/conf, then each
    `--config-dir`, then what a `hydra.searchpath` override named. Nothing depends on the cwd."""
    own = [t for t in argv if t.startswith(config.SEARCH_PATH + "=") or t.startswith("home=")]
    merged = [t for t in config.with_search_path(own, _config_dirs(argv)) if t.startswith(config.SEARCH_PATH + "=")]
    kept = [t for t in argv if not t.startswith(config.SEARCH_PATH + "=")]
    # Beside the other overrides: Hydra's parser takes them in one run, not on both sides of a flag.
    last = max((i for i, t in enumerate(kept) if t in _user_overrides(kept)), default=len(kept) - 1)
    kept = kept[:last + 1] + merged + kept[last + 1:]
    listed = [e.removeprefix("file://") for t in merged for e in config.search_path_entries(t)]
    if {"--help", "-h"} & set(argv) and not _config_dirs(argv) and listed and Path(listed[0]).is_dir():
        # Hydra's help lists the options of a --config-dir, not those a hydra.searchpath adds.
        kept += ["--config-dir", listed[0]]
    return kept


def _prevalidate(argv: list[str]) -> None:
    """Compose each job before Hydra runs, so a bad override reads `key: problem`, exit 2."""
    if _INFO_FLAGS.intersection(argv):
        return
    overrides = _user_overrides(argv)
    try:
        sweep = bool({"-m", "--multirun"} & set(argv))
        jobs = config.split_sweep(overrides) if sweep else [overrides]
        composed = [config.compose(job) for job in jobs]
        if sweep:  # every job is checked, as mode=validate checks it, before any runs
            problems = [problem for job, cfg in zip(jobs, composed) if cfg.mode == Mode.eval
                        for problem in _eval_job_problems(job, cfg)]
            if problems:
                raise ConfigError(problems)
    except ConfigError as error:
        fail(error)
    except Exception as exc:  # a sweep syntax Hydra itself will report
        log.debug("pre-validation skipped: %s", exc)


def _eval_job_problems(job: list[str], cfg: DictConfig) -> list:
    """What building this `mode=eval` job would refuse (its model found, not loaded), each problem
    named with the job's overrides."""
    import tempfile

    from omegaconf import OmegaConf

    from .build import build_parts
    from .errors import ConfigProblem
    from .eval.runner import offline

    with tempfile.TemporaryDirectory() as scratch:
        checking = OmegaConf.merge(offline(cfg, Path(scratch)), {"mode": "validate"})
        try:
            build_parts(config.to_settings(checking))
        except ConfigError as error:
            return [ConfigProblem(f"[{' '.join(config.chosen(job))}] {p.key}", p.message) for p in error.problems]
    return []


def _share_metrics(cfg: DictConfig) -> None:
    """Several workers add their metrics up in files (prometheus_client's multiprocess mode), which
    must be chosen before prometheus_client is imported: here, before the miner is."""
    if cfg.mode == Mode.serve and cfg.axon.workers > 1 and cfg.metrics.port is not None:
        directory = Path(cfg.home).expanduser() / "run" / "metrics"
        shutil.rmtree(directory, ignore_errors=True)  # a previous run's files would be counted again
        directory.mkdir(parents=True)
        os.environ[MULTIPROCESS_DIRECTORY] = str(directory)


# Loggers that write a line per call (each request to a model server, each chain query): DEBUG only.
CHATTY_LOGGERS = ("httpx", "httpcore", "urllib3", "websockets", "bittensor")


def _quiet(cfg: DictConfig) -> None:
    """`log_level` for the miner; the libraries' per-call lines and progress bars only at DEBUG (a
    service's log holds what an operator reads). An evaluation keeps its progress bars."""
    level = cfg.log_level.value
    logging.getLogger().setLevel(level)
    if level != "DEBUG":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
        if cfg.mode != Mode.eval:
            os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm's own switch (transformers' bars are tqdm's)


def _prune_runs(cfg: DictConfig) -> None:
    """Keep the newest `keep_runs` run folders (home/runs/DATE/TIME, this one included). Nothing is
    pruned where `hydra.run.dir` points elsewhere: that directory is the operator's."""
    if not cfg.keep_runs or HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    runs = Path(cfg.home).expanduser().resolve() / "runs"
    if Path(HydraConfig.get().runtime.output_dir).resolve().parent.parent != runs:
        return
    folders = sorted(runs.glob("*/*"), key=lambda folder: (folder.parent.name, folder.name))
    for old in folders[:-cfg.keep_runs]:
        shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(OSError):
            old.parent.rmdir()  # a day left empty


@hydra.main(config_path=str(config.CONF_DIR), config_name=config.PRIMARY, version_base="1.3")
def _job(cfg: DictConfig) -> Optional[float]:
    _quiet(cfg)
    _prune_runs(cfg)
    _share_metrics(cfg)
    from .miner import Miner  # imported here so --help stays fast

    try:
        if cfg.mode == Mode.eval:
            return _evaluate(cfg)
        miner = Miner(cfg)
        if miner.settings.mode.value == "validate":
            for note in miner.check_serving():
                print(f"declarative_miner: note: {note}")
            print("declarative_miner: the config is valid; it would run:")
            print(miner.summary())
            miner.close()
            return
        miner.run()
    except ConfigError as error:
        hydra = HydraConfig.get()
        if hydra.mode != RunMode.MULTIRUN:
            fail(error)
        # One job of a sweep: the others go on, the summary names this one, and the sweep exits 2.
        print(f"declarative_miner: job {hydra.job.num} has problems:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        from .summary import record_failure

        record_failure(Path(hydra.runtime.output_dir), config.chosen(hydra.overrides.task), str(error).replace("\n", "; "))
        _failed_jobs.append(hydra.job.num)
    return None


_failed_jobs: list[int] = []  # jobs of this sweep that failed with config problems


def _evaluate(cfg: DictConfig) -> float:
    """Run `mode=eval`; returns the sweep objective (what an Optuna sweeper maximises)."""
    from .eval.runner import evaluate, objective
    from .summary import METRICS

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    metrics = evaluate(cfg, output_dir, config.chosen(hydra_cfg.overrides.task))
    latency, quality = metrics["latency_ms"] or {}, metrics["quality"]
    print(f"declarative_miner: {metrics['answered']}/{metrics['requests']} answered, errors {metrics['errors'] or 'none'}, "
          f"p50 {latency.get('p50')} ms, p95 {latency.get('p95')} ms, relevance {quality['relevance']}, "
          f"contains {quality['contains']}: {output_dir / METRICS}")
    return objective(metrics, cfg.eval.max_p95_ms)


def main() -> None:
    """Entry point of `python -m declarative_miner` and the `declarative-miner` script."""
    os.umask(PRIVATE_UMASK)  # wallets, caches and replay stores are the operator's alone
    if {"--version", "-V"} & set(sys.argv[1:]):
        print(f"declarative-miner {version()}")
        return
    config.register()
    sys.argv[1:] = with_own_config(sys.argv[1:])
    _prevalidate(sys.argv[1:])
    _job()
    if _failed_jobs:
        print(f"declarative_miner: {len(_failed_jobs)} job(s) of the sweep failed: {_failed_jobs}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def version() -> str:
    """The installed package's version (the checkout's when run from it uninstalled)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("declarative-miner")
    except PackageNotFoundError:
        return "0+unknown"
