"""The generic Miner: the seed's API, every part built from the composed config tree."""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import functools
import gc
import inspect
import json
import logging
import os
import shlex
import socket
import sys
from typing import Any, AsyncIterator, Callable, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from . import args as cli_args
from .build import Parts, build_app, build_parts, check_serving, clear_cache, kind, serving_marker
from .chain.dev import dev_wallets_dir
from .chain.metagraph import Metagraph
from .config import compose, to_settings
from .files import default_home, private_dir, write_private
from .imports import Checked
from .prompting import Prompting, json_default
from .prompts.usage import Usage
from .runtime.answers import CallKinds, as_prompt_failure, chunks_of, completion_of, in_thread, outputs_of
from .runtime.threads import DaemonThreadPool
from .server.app import MinerApp
from .server.metrics import multiprocess_mode, serve_metrics
from .server.serving import HttpServer, bind, uvicorn_config
from .synapses import PROMPT, Synapse

log = logging.getLogger(__name__)


class Miner:
    """A Bittensor miner realised from a config tree (see conf/miner.yaml).

    Args:
        config: the composed tree (a DictConfig); None composes the defaults.
        axon: keys overriding `config.axon`, e.g. `{"port": 0}` for any free port.
        wallet: a `bittensor.Wallet` to use instead of `config.wallet`.
        subtensor: a `bittensor.Subtensor` for live networks (built from `network.name` when
            None); tests pass one over an in-memory `Substrate`. The dev network needs none.

    Raises:
        ConfigError: every problem found in the config, together.
    """

    def __init__(self, config: Optional[DictConfig] = None, axon: Optional[Mapping[str, Any]] = None,
                 wallet: Any = None, subtensor: Any = None):
        cfg = compose() if config is None else config
        if axon:
            cfg = OmegaConf.merge(cfg, {"axon": dict(axon)})
        self._config = cfg
        self.settings = s = to_settings(cfg)
        own_prompt = None if type(self).prompt is Miner.prompt else f"{type(self).__module__}.{type(self).__qualname__}"
        self._parts: Parts = build_parts(s, wallet=wallet, subtensor=subtensor, own_prompt=own_prompt)
        log.info("Instantiating prompt <%s>", s.prompt.get("_target_"))
        parts = self._parts
        self.wallet, self.not_created, self.chain, self._sync = parts.wallet, parts.not_created, parts.chain, parts.sync
        self.synapses, self.cache, self.metrics = parts.synapses, parts.cache, parts.metrics
        self._executor = DaemonThreadPool(s.axon.max_concurrency, "prompt")
        self._kind_of = CallKinds()  # how `_call` calls each callable
        if self.usage is not None:
            self.usage.listen(lambda prompt, completion: (self.metrics.tokens.labels("prompt").inc(prompt),
                                                          self.metrics.tokens.labels("completion").inc(completion)))
        self._server: Optional[HttpServer] = None
        self._metrics_server: Any = None
        self._port: Optional[int] = None

    # -- the seed's API -------------------------------------------------------------------

    def config(self) -> DictConfig:
        """The composed config tree this miner was built from."""
        return self._config

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """Add one typed `--group.key` option per leaf of the config tree to `parser`.

        `Miner.config_from_args(parser.parse_args())` composes the tree those options describe.
        """
        cli_args.add_args(parser, compose())

    @classmethod
    def config_from_args(cls, namespace: argparse.Namespace) -> DictConfig:
        """The tree composed from the options `add_args` defined (unset ones keep defaults)."""
        return compose(cli_args.overrides(namespace))

    async def _prompt(self, synapse: Prompting) -> Prompting:
        """Consult the prompt cache, then call `prompt`; fills and returns `synapse`.

        Raises:
            DuplicatePrompt: (a ValueError) the prompt was seen within `cache.ttl` and
                `cache.on_hit` is `reject`.
            PromptFailed: the prompt raised or returned something that is not a completion.
        """
        async def answer() -> str:
            with as_prompt_failure():
                return await completion_of(await self._call(self.prompt, synapse), self._executor)

        synapse.completion = await self.cache.run(self._cache_key(synapse), answer)
        return synapse

    def _cache_key(self, synapse: Prompting) -> str:
        # What `prompt` is asked: every field but the caller and the completion it fills (for each
        # type `prompt` answers, its inputs), so Prompting and StreamPrompting share their answers.
        asked = {name: getattr(synapse, name) for name in _asked_fields(type(synapse))}
        return self.cache.key(PROMPT, asked, synapse.dendrite.hotkey)

    def _key(self, synapse: Synapse, request: Any) -> str:
        if synapse.answer is None:
            return self._cache_key(request)
        return self.cache.key(synapse.answered_by, synapse.inputs_of(request), request.dendrite.hotkey)

    async def _answer(self, synapse: Synapse, request: Any) -> Any:
        """Fill `request`'s outputs as its type declares: `prompt` through `_prompt`, any other
        callable through the cache too (its outputs kept as JSON)."""
        if synapse.answer is None:
            _answering.set(synapse)
            return await self._prompt(request)

        async def answer() -> str:
            with as_prompt_failure():
                outputs = outputs_of(await self._call(synapse.answer, request, **synapse.arguments_of(request)),
                                     synapse, request)
                return json.dumps(outputs, default=json_default)

        for name, value in json.loads(await self.cache.run(self._key(synapse, request), answer)).items():
            setattr(request, name, value)
        return request

    async def _answer_stream(self, synapse: Synapse, request: Any) -> AsyncIterator[str]:
        """`_answer`, chunk by chunk as the answer yields them (for a type that streams its one text
        output); the cache sees the whole text."""
        if synapse.answer is None:
            answer, arguments = self.prompt, {}
            _answering.set(synapse)
        else:
            answer, arguments = synapse.answer, synapse.arguments_of(request)

        async def chunks() -> AsyncIterator[str]:
            with as_prompt_failure():
                produced = chunks_of(await self._call(answer, request, **arguments), self._executor)
                async with contextlib.aclosing(produced):
                    async for chunk in produced:
                        yield chunk

        async with contextlib.aclosing(self.cache.stream(self._key(synapse, request), chunks)) as streamed:
            async for chunk in streamed:
                yield chunk

    async def prompt(self, synapse: Prompting) -> Any:
        """Answer `synapse` with the configured callable (`prompt._target_`).

        Returns a completion (`str`), the filled `synapse`, or a generator of text chunks.
        Subclasses may override this with a plain or an async method; a plain one runs in a
        worker thread so it never blocks the server. The request type's declared `arguments` (a
        request's `max_tokens`, say) reach the configured callable as keyword arguments.
        """
        synapse_type = _answering.get()
        arguments = synapse_type.arguments_of(synapse) if synapse_type is not None else {}
        return await self._call(self._parts.prompt, synapse, **arguments)

    async def _call(self, fn: Callable, synapse: Prompting, **arguments: Any) -> Any:
        kind = self._kind_of(fn)
        if kind == "coroutine":
            return await fn(synapse, **arguments)
        if kind == "async generator":
            return fn(synapse, **arguments)  # creating an async generator runs none of it: no thread needed
        result = await in_thread(self._executor, functools.partial(fn, **arguments) if arguments else fn, synapse)
        return await result if inspect.isawaitable(result) else result

    def blacklist(self, synapse: Prompting) -> tuple[bool, str]:
        """(blacklisted, reason) for the caller in `synapse.dendrite`, by the configured rules.

        Runs on the hotkey the request claims, before its body is read; only in-memory state.
        """
        return self._parts.blacklist.check(synapse, self.metagraph)

    def priority(self, synapse: Prompting) -> float:
        """How urgently to serve this caller when requests wait; higher runs first."""
        return float(self._parts.priority(synapse, self.metagraph))

    def run(self) -> None:
        """Serve until stopped (SIGINT/SIGTERM drain in-flight requests, then return).

        On a live network the endpoint is published on chain first, when it differs. With
        `axon.workers` > 1, gunicorn supervises that many worker processes on the one socket.
        """
        sock = self._prepare()
        # The process now only serves, and what is built lives as long as it. Frozen out of the
        # collector's sight, those objects are no longer walked by every full collection, nor
        # written to in pages forked workers share. run_in_background_thread leaves an embedding
        # process's collector alone.
        gc.collect()
        gc.freeze()
        try:
            if self.settings.axon.workers == 1:
                app = self.asgi_app()
                self._server = HttpServer(sock, self._uvicorn_config(app))
                self._server.run()
                if app.startup_failure is not None:
                    raise _not_started(app)
            else:
                self._supervise(sock)
        finally:
            self._stop_metrics()
            sock.close()
            serving_marker(self.settings).unlink(missing_ok=True)

    def _supervise(self, sock: socket.socket) -> None:
        from .errors import ConfigError, ConfigProblem
        from .server.workers import WorkerFailed, supervise

        app = self.asgi_app()
        inherited = [self._metrics_server.socket] if self._metrics_server is not None else []
        try:
            supervise(app, sock, self.settings.axon.workers, self._uvicorn_config(app),
                      graceful_timeout=self.settings.axon.stop_bound, inherited=inherited)
        except WorkerFailed as exc:
            raise ConfigError([ConfigProblem("axon.workers", f"a worker could not start, so the miner stopped "
                                             f"(got {exc.reason}; expected workers that start: fix the cause "
                                             "above, or axon.workers=1)")]) from None

    def run_in_background_thread(self, timeout: float = 30.0) -> None:
        """Start serving in a daemon thread; returns once the port accepts requests."""
        if self._server is not None:
            return
        sock = self._prepare()
        app = self.asgi_app()
        self._server = HttpServer(sock, self._uvicorn_config(app))
        try:
            self._server.start(timeout)
        except RuntimeError:
            self.stop_run_thread()
            raise _not_started(app) from None
        except BaseException:
            self.stop_run_thread()
            raise

    def stop_run_thread(self) -> None:
        """Stop the background server, wait for its thread, release the port."""
        if self._server is None:
            return
        self._server.stop()
        self._server.socket.close()
        self._server = None
        self._stop_metrics()
        serving_marker(self.settings).unlink(missing_ok=True)

    def __enter__(self) -> "Miner":
        self.run_in_background_thread()
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.stop_run_thread()

    # -- serving ------------------------------------------------------------------------

    @property
    def metagraph(self) -> Metagraph:
        """The newest snapshot of the subnet (refreshed every `network.sync_interval` s)."""
        return self._sync.current

    @property
    def backend(self) -> Any:
        """The configured prompt callable: `prompt._target_` built with its arguments."""
        return self._parts.prompt

    @property
    def usage(self) -> Optional[Usage]:
        """Token counts of a model backend that reports them (None for plain prompt callables)."""
        usage = getattr(self._parts.prompt, "usage", None)
        return usage if isinstance(usage, Usage) else None

    @property
    def hotkey(self) -> str:
        return self.wallet.hotkey.ss58_address

    @property
    def port(self) -> int:
        """The port actually bound (meaningful with `axon.port=0`) while serving."""
        return self._port if self._port is not None else self.settings.axon.port

    @property
    def metrics_port(self) -> Optional[int]:
        """The metrics listener's port while serving (None: no listener)."""
        return self._metrics_server.server_port if self._metrics_server is not None else None

    @property
    def drain_bound(self) -> float:
        """Seconds a stop may take at most: the in-flight requests' deadline, and a second."""
        return self.settings.axon.drain_bound

    def check_serving(self) -> list[str]:
        """What `mode=validate` checks beyond building: the store opens, the port is free (or held by
        this home's own running miner: a note). Raises `ConfigError`; returns the notes."""
        return check_serving(self._parts)

    def _prepare(self) -> socket.socket:
        """What comes before serving, once: check the store, clear the cache if asked, bind the
        port (a taken one is a clear error here), start the metrics listener, publish on chain."""
        self.check_serving()
        if self.settings.cache.clear and (cleared := clear_cache(self._parts)):
            log.info("Cleared %d stored prompts (cache.clear=true)", cleared)
        a = self.settings.axon
        sock = bind(a.ip, a.port)
        self._port = sock.getsockname()[1]
        try:
            self._start_metrics()
        except BaseException:
            sock.close()
            raise
        marker = serving_marker(self.settings)
        private_dir(marker.parent)
        write_private(marker, json.dumps({"pid": os.getpid(), "axon.port": self._port,
                                          "metrics.port": self.metrics_port}))
        self._publish()
        return sock

    def _start_metrics(self) -> None:
        m = self.settings.metrics
        if m.port is None:
            return
        if self.settings.axon.workers > 1 and not multiprocess_mode():
            log.warning("No metrics listener: with axon.workers > 1 the workers' metrics are added up through "
                        "PROMETHEUS_MULTIPROC_DIR, which must be set before the miner is imported (the command "
                        "line does it)")
            return
        try:
            self._metrics_server, _ = serve_metrics(self.metrics, m.host, m.port)
        except OSError as exc:
            from .errors import ConfigError, ConfigProblem

            raise ConfigError([ConfigProblem("metrics.port", f"cannot listen on {m.host}:{m.port} (got {exc.strerror}; "
                                             "expected a free port, or metrics.port=null for no listener)")]) from None
        log.info("Metrics for Prometheus at http://%s:%d/metrics", m.host, self.metrics_port)

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    def _uvicorn_config(self, app: Optional[MinerApp]) -> dict:
        a = self.settings.axon
        return uvicorn_config(app, app.connections if app is not None else None, header_timeout=a.request_timeout,
                              drain_timeout=self.drain_bound, max_header_bytes=a.max_header_bytes)

    async def _start_prompt(self) -> None:
        # A backend with work to do in each serving process (connections to open) does it here.
        if (start := getattr(self._parts.prompt, "start", None)) is not None:
            await start()

    async def _close_prompt(self) -> None:
        # A backend holding connections (the openai one) closes them on the loop that opened them.
        if (aclose := getattr(self._parts.prompt, "aclose", None)) is not None:
            await aclose()

    def _publish(self) -> None:
        a, ip = self.settings.axon, self._parts.published_ip
        if self.chain is None or ip is None:
            return
        try:
            self.chain.publish(self.wallet, ip, a.external_port or self.port)
        except Exception as exc:  # serving matters more: validators may still know the old endpoint
            log.error("Could not publish the endpoint on chain, serving anyway: %s", exc)

    def unavailable(self) -> Optional[str]:
        """Why requests must be refused now (a metagraph too old to trust), or None."""
        network = self.settings.network
        bound = network.max_snapshot_age or 3 * network.sync_interval
        age = self.metagraph.age
        if age <= bound:
            return None
        why = f"refreshing it failed ({self._sync.failure})" if self._sync.failure else "no refresh has finished yet"
        return (f"the metagraph is {age:.0f} s old (bound {bound:g} s): {why}; "
                f"retrying every {network.sync_interval:g} s")

    def asgi_app(self) -> MinerApp:
        """The ASGI app that serves this miner (what `run` hands uvicorn; any ASGI server can run
        it). Building it opens nothing: its stores open in the ASGI lifespan."""
        return build_app(self._parts, self)

    async def _announce(self) -> None:
        a = self.settings.axon
        log.info("Serving %s as %s on http://%s:%d (%s, GET /health), process %d", self.settings.prompt.get("_target_"),
                 self.hotkey, a.ip, self.port, ", ".join(f"POST {t.route}" for t in self.synapses.values()), os.getpid())
        if self.settings.network.name == "dev" and self.settings.mode.value == "serve":
            wallets = dev_wallets_dir(self.settings.home)
            elsewhere = f" --wallet-path {shlex.quote(str(wallets))}" \
                if wallets.resolve() != dev_wallets_dir(default_home()).resolve() else ""
            log.info('Query it as the dev validator: %s -m declarative_miner.client "What is 2+2?" --port %d%s',
                     sys.executable, self.port, elsewhere)
        if self._parts.blacklist.admits_non_validators:
            log.warning("The blacklist lets non-validators in (blacklist=%s): anyone who signs is served.",
                        list(n for n, _ in self._parts.blacklist.rules) or "open")

    def health(self) -> dict:
        """What `GET /health` answers: alive, and who this is (all of it public on chain)."""
        neuron = self.metagraph.by_hotkey(self.hotkey)
        return {"status": "ok", "hotkey": self.hotkey, "network": self.settings.network.name,
                "netuid": self.settings.network.subnet, "registered": neuron is not None,
                "uid": neuron.uid if neuron else None}

    def summary(self) -> str:
        """What would run, one line per part (printed by `mode=validate`)."""
        s = self.settings
        rules = " -> ".join(name for name, _ in self._parts.blacklist.rules) or "none (open)"
        cache = (f"ttl {s.cache.ttl:g} s, on_hit={s.cache.on_hit.value}, scope={s.cache.scope}, {self.cache.where}; "
                 f"keyed by request, inputs and {self.cache.namespace}" if s.cache.ttl else "off")
        formats = ", ".join({"btauth": "btauth/1", "v10": "v10", "epistula": "Epistula v2"}[f]
                            for f in s.axon.wire_formats)
        return "\n".join([
            f"network    {s.network.name} (netuid {s.network.subnet}): {len(self.metagraph)} neurons",
            f"wallet     {s.wallet.name}/{s.wallet.hotkey} -> " + (
                f"not created yet ({', '.join(map(str, self.not_created))}): the first run creates it; "
                "mode=validate creates nothing" if self.not_created else self.hotkey),
            f"axon       http://{s.axon.ip}:{s.axon.port} ({formats}; {s.axon.max_concurrency} at once, "
            f"timeout {s.axon.request_timeout:g} s, {s.axon.workers} process{'es' if s.axon.workers > 1 else ''})",
            f"stopping   SIGTERM drains within {s.axon.stop_bound:g} s: a service manager must wait longer before it "
            "kills (systemd TimeoutStopSec, pm2 kill_timeout, docker stop_grace_period)",
            f"state      {kind(self._parts)}",
            f"blacklist  {rules}",
            f"priority   {s.priority.strategy} {s.priority.params or ''}".rstrip(),
            f"cache      {cache}",
            "synapses   " + ", ".join(f"{name}{' (streamed)' if t.stream else ''} <- {t.answered_by}"
                                      for name, t in self.synapses.items()) + ", and the v10 ping /Synapse",
            f"prompt     {s.prompt.get('_target_')}" + (f": {self._parts.prompt!r}" if self.usage or
                                                         isinstance(self._parts.prompt, Checked) else ""),
        ])

    def close(self) -> None:
        """Release worker threads and the chain connection (serving stops first)."""
        self.stop_run_thread()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.chain is not None:
            self.chain.close()


def _not_started(app: MinerApp) -> Exception:
    from .errors import ConfigError, ConfigProblem

    return ConfigError([ConfigProblem("prompt", f"the miner could not start serving (got {app.startup_failure}; "
                                                "expected a start-up that succeeds: see the log above)")])


_answering: contextvars.ContextVar[Optional[Synapse]] = contextvars.ContextVar("answering", default=None)


@functools.cache
def _asked_fields(request_class: type) -> tuple[str, ...]:
    """What `prompt` is asked in a request of `request_class`: every field but the caller and the
    completion it fills (read once per class: `dataclasses.fields` on every request cost more)."""
    return tuple(f.name for f in dataclasses.fields(request_class) if f.name not in ("dendrite", "completion"))
