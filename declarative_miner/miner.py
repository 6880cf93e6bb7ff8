"""The generic Miner: the seed's API, every part built from the composed config tree."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import inspect
import json
import logging
import os
import sys
import threading
from typing import Any, AsyncIterator, Callable, Mapping, Optional

import bittensor as bt
from omegaconf import DictConfig, OmegaConf

from . import args as cli_args
from .answers import CallKinds, as_prompt_failure, chunks_of, completion_of, in_thread, outputs_of
from .chain.metagraph import Metagraph
from .config import compose, to_settings
from .parts import build_app, build_parts, open_replay_store
from .prompts.usage import Usage
from .prompting import Prompting
from .server.app import MinerApp
from .server.serving import HttpServer
from .server.threads import DaemonThreadPool
from .server.workers import supervise
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
        self.subtensor = subtensor
        own_prompt = None if type(self).prompt is Miner.prompt else f"{type(self).__module__}.{type(self).__qualname__}"
        self._parts = parts = build_parts(s, wallet=wallet, subtensor=subtensor, own_prompt=own_prompt)
        log.info("Instantiating prompt <%s>", s.prompt.get("_target_"))
        self.wallet, self.not_created, self.chain, self._sync = parts.wallet, parts.not_created, parts.chain, parts.sync
        self._blacklist, self._priority, self._prompt_fn = parts.blacklist, parts.priority, parts.prompt
        self.synapses, self.cache, self._budgets = parts.synapses, parts.cache, parts.budgets
        self._executor = DaemonThreadPool(s.axon.max_concurrency, "prompt")
        self._kind_of = CallKinds()  # how `_call` calls each callable
        self._server: Optional[HttpServer] = None
        self._thread: Optional[threading.Thread] = None
        self._nonces = None  # the replay store, opened with the server

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
            return await self._prompt(request)

        async def answer() -> str:
            with as_prompt_failure():
                return json.dumps(outputs_of(await self._call(synapse.answer, request), synapse, request))

        for name, value in json.loads(await self.cache.run(self._key(synapse, request), answer)).items():
            setattr(request, name, value)
        return request

    async def _answer_stream(self, synapse: Synapse, request: Any) -> AsyncIterator[str]:
        """`_answer`, chunk by chunk as the answer yields them (for a type that streams its one text
        output); the cache sees the whole text."""
        answer = self.prompt if synapse.answer is None else synapse.answer

        async def chunks() -> AsyncIterator[str]:
            with as_prompt_failure():
                produced = chunks_of(await self._call(answer, request), self._executor)
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
        worker thread so it never blocks the server.
        """
        return await self._call(self._prompt_fn, synapse)

    async def _call(self, fn: Callable, synapse: Prompting) -> Any:
        kind = self._kind_of(fn)
        if kind == "coroutine":
            return await fn(synapse)
        if kind == "async generator":
            return fn(synapse)  # creating an async generator runs none of it: no thread needed
        result = await in_thread(self._executor, fn, synapse)
        return await result if inspect.isawaitable(result) else result

    def blacklist(self, synapse: Prompting) -> tuple[bool, str]:
        """(blacklisted, reason) for the caller in `synapse.dendrite`, by the configured rules.

        Runs on the hotkey the request claims, before its body is read; only in-memory state.
        """
        return self._blacklist.check(synapse, self.metagraph)

    def priority(self, synapse: Prompting) -> float:
        """How urgently to serve this caller when requests wait; higher runs first."""
        return float(self._priority(synapse, self.metagraph))

    def run(self) -> None:
        """Serve until stopped (SIGINT/SIGTERM drain in-flight requests, then return).

        On a live network the endpoint is published on chain first, when it differs.
        """
        self._listen()
        # The process now only serves, and what is built lives as long as it. Frozen out of the
        # collector's sight, those ~100,000 objects are no longer walked by every full collection
        # (tens of ms each, every few thousand requests: docs/performance.md), nor written to in
        # pages the forked workers share. run_in_background_thread leaves an embedding process's
        # collector alone.
        gc.collect()
        gc.freeze()
        if self.settings.axon.workers == 1:
            self._serve()
            return
        self.cache.close()  # each worker opens its own SQLite connection after the fork
        try:
            supervise(self.settings.axon.workers, self._serve_as_worker)
        finally:
            self._close_files()  # the replay store the workers shared is saved once they are done

    def _serve_as_worker(self) -> None:
        if self.chain is not None:  # the parent's connection lives on a thread the fork did not copy
            self.chain.subtensor = bt.Subtensor(self.settings.network.name)
        self.cache.open()  # this process's own disk connection
        self._serve()

    def run_in_background_thread(self, timeout: float = 30.0) -> None:
        """Start serving in a daemon thread; returns once the port accepts requests."""
        if self._thread is not None:
            return
        self._listen()
        self._thread = threading.Thread(target=self._serve, name="miner", daemon=True)
        self._thread.start()
        self._server.wait_ready(self._thread, timeout)

    def stop_run_thread(self) -> None:
        """Stop the background server, wait for its thread, release the port."""
        if self._thread is None:
            return
        self._server.stop()
        self._thread.join()
        self._thread, self._server = None, None

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
        return self._prompt_fn

    @property
    def usage(self) -> Optional[Usage]:
        """Token counts of a model backend that reports them (None for plain prompt callables)."""
        usage = getattr(self._prompt_fn, "usage", None)
        return usage if isinstance(usage, Usage) else None

    @property
    def hotkey(self) -> str:
        return self.wallet.hotkey.ss58_address

    @property
    def port(self) -> int:
        """The port actually bound (meaningful with `axon.port=0`) while serving."""
        return self._server.port if self._server else self.settings.axon.port

    def _listen(self) -> None:
        """Bind the port (a taken one is a clear error here), then publish it on chain."""
        self._server = self._new_server()
        self._server.bind()
        self._publish()

    def _open_cache(self) -> None:
        restored, cleared = self.cache.open(self.settings.cache.clear)
        if cleared:
            log.info("Cleared %d stored prompts (cache.clear=true)", cleared)
        if restored:
            log.info("Restored %d prompts answered in the last %g s from %s", restored, self.settings.cache.ttl,
                     self.settings.cache.directory)

    def _new_server(self) -> HttpServer:
        a = self.settings.axon
        return HttpServer(self.asgi_app(), a.ip, a.port, drain_timeout=a.request_timeout,
                          max_connections=a.max_connections, max_connections_per_ip=a.max_connections_per_ip,
                          max_header_bytes=a.max_header_bytes,
                          header_timeout=a.request_timeout, trusted_proxies=a.trusted_proxies)

    def _serve(self) -> None:
        try:
            self._server.serve()
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = DaemonThreadPool(self.settings.axon.max_concurrency, "prompt")

    async def _save_nonces(self) -> None:
        # A clean stop saves what an in-memory replay store holds, for the next start.
        if self._nonces is not None:
            self._nonces.close()

    async def _close_prompt(self) -> None:
        # A backend holding connections (the openai one) closes them on the loop that opened them.
        if (aclose := getattr(self._prompt_fn, "aclose", None)) is not None:
            await aclose()

    def _publish(self) -> None:
        a = self.settings.axon
        if self.chain is None or not self.settings.network.publish_axon:
            return
        try:
            self.chain.publish(self.wallet, a.external_ip or a.ip, a.external_port or self.port)
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

    def _replay_store(self):
        if self._nonces is not None:
            self._nonces.close()
        self._nonces = open_replay_store(self.settings)
        return self._nonces

    def _close_files(self) -> None:
        self.cache.close()
        if self._budgets is not None:
            self._budgets.close()
        if self._nonces is not None:
            self._nonces.close()
            self._nonces = None

    def asgi_app(self) -> MinerApp:
        """The ASGI app that serves this miner, its cache and replay store opened (what `run`
        hands uvicorn; any ASGI server can run it)."""
        self._open_cache()
        return build_app(self.settings, self._parts, self, self._replay_store())

    async def _announce(self) -> None:
        a = self.settings.axon
        log.info("Serving %s as %s on http://%s:%d (%s, GET /health)", self.settings.prompt.get("_target_"),
                 self.hotkey, a.ip, self.port, ", ".join(f"POST {t.route}" for t in self.synapses.values()))
        if self.settings.network.name == "dev":
            log.info('Query it as the dev validator: %s -m declarative_miner.client "What is 2+2?" --port %d',
                     sys.executable, self.port)
        if self._blacklist.admits_non_validators:
            log.warning("The blacklist lets non-validators in (blacklist=%s): anyone who signs is served.",
                        list(n for n, _ in self._blacklist.rules) or "open")

    def health(self) -> dict:
        """What `GET /health` answers: liveness, identity and the metagraph's age."""
        neuron = self.metagraph.by_hotkey(self.hotkey)
        return {
            "status": "ok", "hotkey": self.hotkey, "network": self.settings.network.name,
            "netuid": self.settings.network.netuid, "registered": neuron is not None,
            "uid": neuron.uid if neuron else None, "pid": os.getpid(), "metagraph_block": self.metagraph.block,
            "metagraph_age": round(self.metagraph.age, 3),
        }

    def summary(self) -> str:
        """What would run, one line per part (printed by `mode=validate`)."""
        s = self.settings
        rules = " -> ".join(name for name, _ in self._blacklist.rules) or "none (open)"
        cache = (f"ttl {s.cache.ttl:g} s, on_hit={s.cache.on_hit.value}, scope={s.cache.scope}, {self.cache.where}; "
                 f"keyed by request, inputs and {self.cache.namespace}" if s.cache.ttl else "off")
        return "\n".join([
            f"network    {s.network.name} (netuid {s.network.netuid}): {len(self.metagraph)} neurons",
            f"wallet     {s.wallet.name}/{s.wallet.hotkey} -> " + (
                f"not created yet ({', '.join(map(str, self.not_created))}): the first run creates it; "
                "mode=validate creates nothing" if self.not_created else self.hotkey),
            f"axon       http://{s.axon.ip}:{s.axon.port} (btauth/1; {s.axon.max_concurrency} at once, "
            f"timeout {s.axon.request_timeout:g} s)",
            f"blacklist  {rules}",
            f"priority   {s.priority.strategy} {s.priority.params or ''}".rstrip(),
            f"cache      {cache}",
            "synapses   " + ", ".join(f"{name}{' (streamed)' if t.stream else ''} <- {t.answered_by}"
                                      for name, t in self.synapses.items()) + ", and the v10 ping /Synapse",
            f"prompt     {s.prompt.get('_target_')}" + (f": {self._prompt_fn!r}" if self.usage else ""),
        ])

    def close(self) -> None:
        """Release the cache, worker threads and chain connection (serving stops first)."""
        self.stop_run_thread()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._close_files()
        self.cache.release_memory()
        if self.chain is not None:
            self.chain.subtensor.close()


@functools.cache
def _asked_fields(request_class: type) -> tuple[str, ...]:
    """What `prompt` is asked in a request of `request_class`: every field but the caller and the
    completion it fills (read once per class: `dataclasses.fields` on every request cost more)."""
    return tuple(f.name for f in dataclasses.fields(request_class) if f.name not in ("dendrite", "completion"))
