"""An in-process chat model (transformers): loaded once at start-up, generating off the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional

from ..errors import MalformedBody
from ..imports import BadArgument, MissingDependency
from ..prompting import Prompting, chat_of
from .usage import Usage

try:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
except ImportError as exc:
    raise MissingDependency("the transformers prompt", exc.name, "pip install '.[llama]' in the clone (README: Models)") from exc
import jinja2  # noqa: E402  (installed with transformers, so imported after the check that names the extra)
from huggingface_hub import constants as hub_constants  # noqa: E402  (a dependency of transformers)

log = logging.getLogger(__name__)

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_END = object()


class TransformersChat:
    """Answers a request's chat (`roles`/`messages` through the tokenizer's chat template) with a
    causal language model, streaming text as tokens are generated.

    The model loads in the constructor, so a miner that starts (or passes `mode=validate`) has it
    in memory. Each request generates in a thread of its own; when the request ends early (its
    deadline, `axon.request_timeout`, passed or the caller left) generation stops at the next token.

    Args:
        model: a local directory in `save_pretrained` layout, or a Hugging Face hub id.
        revision: branch, tag or commit when `model` is a hub id.
        dtype: auto (as stored), float32, bfloat16 or float16.
        device: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.
        threads: torch CPU threads per generation; None: all cores but one, which the server's
            event loop needs (on 2 cores, 2 threads made answers ~10% slower than 1).
        max_new_tokens: upper bound on generated tokens (lowered to fit the model's context).
        temperature: 0 for greedy (deterministic) decoding; above 0 samples.
        top_p: nucleus sampling mass, used when sampling.
        system_prompt: a system message put first when the request carries none.
    """

    def __init__(self, model: str, revision: Optional[str] = None, dtype: str = "auto", device: str = "auto",
                 threads: Optional[int] = None, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, system_prompt: Optional[str] = None):
        _check_arguments(dtype, max_new_tokens, temperature, top_p, threads)
        self.threads = threads or max(1, (os.cpu_count() or 2) - 1)
        self.device = _device(device)
        self.max_new_tokens, self.system_prompt = max_new_tokens, system_prompt
        self.sampling: dict[str, Any] = (dict(do_sample=True, temperature=temperature, top_p=top_p)
                                         if temperature > 0 else dict(do_sample=False))
        self.usage = Usage()
        started = time.perf_counter()
        log.info("Loading model %s (dtype %s) on %s ...", model, dtype, self.device)
        self.tokenizer, self.model = _load(model, revision, DTYPES[dtype], self.device)
        self.context = getattr(self.model.config, "max_position_embeddings", None)
        pad = self.tokenizer.pad_token_id  # 0 is a real id: only None falls back to end-of-sequence
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.name = model
        log.info("Loaded %s in %.1f s: %s parameters, context %s tokens", model,
                 time.perf_counter() - started, f"{self.model.num_parameters():,}", self.context)

    @classmethod
    def check(cls, model: str, revision: Optional[str] = None, dtype: str = "auto", device: str = "auto",
              threads: Optional[int] = None, max_new_tokens: int = 256, temperature: float = 0.0,
              top_p: float = 1.0, system_prompt: Optional[str] = None) -> None:
        """What the constructor checks, and the model found (its config and tokenizer, locally or on the
        hub, with a chat template), without loading its weights: `mode=validate`."""
        _check_arguments(dtype, max_new_tokens, temperature, top_p, threads)
        _device(device)
        _load(model, revision, DTYPES[dtype], "cpu", weights=False)

    def __repr__(self) -> str:
        return (f"TransformersChat({self.name!r} on {self.device}, {self.threads} CPU threads, "
                f"max_new_tokens={self.max_new_tokens}, {self.sampling})")

    async def __call__(self, request: Prompting, max_new_tokens: Optional[int] = None) -> AsyncIterator[str]:
        """Yield the completion's text as it is generated: at most `max_new_tokens` tokens (a request's
        own bound, which a request type's `arguments` may pass), never more than the configured one."""
        loop, chunks, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

        def hand_over(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody reads on
                stop.set()

        limit = self.max_new_tokens if max_new_tokens is None else max(1, min(int(max_new_tokens), self.max_new_tokens))
        thread = threading.Thread(target=self._run, args=(chat_of(request, self.system_prompt), hand_over, stop, limit),
                                  name="generate", daemon=True)
        thread.start()
        try:
            while (item := await chunks.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def _run(self, chat: list[dict[str, str]], hand_over: Callable[[Any], None], stop: threading.Event,
             limit: int) -> None:
        torch.set_num_threads(self.threads)  # OpenMP's count is per OS thread: set elsewhere, it is lost here
        try:
            self.generate(chat, hand_over, stop, limit)
        except Exception as exc:
            hand_over(exc)
        finally:
            hand_over(_END)

    def generate(self, chat: list[dict[str, str]], emit: Callable[[str], None],
                 stop: Optional[threading.Event] = None, limit: Optional[int] = None) -> "torch.Tensor":
        """Generate an answer to `chat` of at most `limit` new tokens (the configured bound when None),
        passing text to `emit` as it forms; returns the new token ids."""
        try:
            inputs = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                        return_dict=True)
        except jinja2.TemplateError as exc:
            raise MalformedBody(f"the model's chat template refuses this chat: {exc}") from None
        prompt_tokens = inputs["input_ids"].shape[1]
        limit = self.max_new_tokens if limit is None else limit
        budget = limit if self.context is None else min(limit, self.context - prompt_tokens)
        if budget < 1:
            raise MalformedBody(f"the prompt is {prompt_tokens} tokens; this model's context is {self.context}")
        feed = IncrementalText(self.tokenizer, emit)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs.to(self.device), **self.sampling, max_new_tokens=budget, streamer=feed,
                pad_token_id=self.pad_token_id,
                stopping_criteria=StoppingCriteriaList([_WhenSet(stop or threading.Event())]))
        new = output[0, prompt_tokens:]
        self.usage.add(prompt_tokens, len(new))
        return new


class IncrementalText:
    """A `generate` streamer that decodes new tokens into text without re-decoding the whole answer.

    It decodes a window of the newest tokens, with the tokens before it as context (as
    text-generation-inference does), and emits the window's new text up to its last complete
    character: a token ending inside a UTF-8 character waits for the rest of it. The emitted
    pieces join to the full decode.
    """

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]):
        self.tokenizer, self.emit = tokenizer, emit
        self.ids: list[int] = []
        self.prefix = self.read = self.sent = 0  # context start, window start, characters of the window sent
        self.prompt_skipped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def put(self, value: "torch.Tensor") -> None:
        if not self.prompt_skipped:  # generate() passes the prompt first
            self.prompt_skipped = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        before = self._decode(self.ids[self.prefix:self.read])
        new = self._decode(self.ids[self.prefix:])[len(before):]
        ready = new if final else new.rstrip("\ufffd")
        if len(ready) > self.sent:
            self.emit(ready[self.sent:])
            self.sent = len(ready)
        if ready == new:  # the window ends on a whole character: the next one starts here
            self.prefix, self.read, self.sent = self.read, len(self.ids), 0


class _WhenSet(StoppingCriteria):
    """Stops generation once `event` is set (the request is over)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: "torch.Tensor", scores: Any, **kwargs: Any) -> "torch.Tensor":
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _check_arguments(dtype: str, max_new_tokens: int, temperature: float, top_p: float,
                     threads: Optional[int]) -> None:
    _require(dtype in DTYPES, "dtype", dtype, ", ".join(DTYPES))
    _require(max_new_tokens >= 1, "max_new_tokens", max_new_tokens, "at least 1")
    _require(temperature >= 0, "temperature", temperature, "0 (greedy) or more")
    _require(0 < top_p <= 1, "top_p", top_p, "a probability in (0, 1]")
    _require(threads is None or threads >= 1, "threads", threads, "at least 1, or null")


def _require(ok: bool, argument: str, got: Any, expected: str) -> None:
    if not ok:
        raise BadArgument(argument, f"out of range (got {got}; expected {expected})")


def _device(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise BadArgument("device", f"cannot use it (got {device}: {exc}; expected cpu, auto, or a device this "
                                    "machine has)") from None
    return device


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub (`HF_ENDPOINT`) accepts a connection now; False when offline mode is set."""
    if hub_constants.HF_HUB_OFFLINE:
        return False
    endpoint = urllib.parse.urlsplit(hub_constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError:
        return False
    return True


def _load(model: str, revision: Optional[str], dtype: Any, device: str, weights: bool = True) -> tuple[Any, Any]:
    """Tokenizer and model (with `weights` off, the model's config only), or a `BadArgument` saying
    where the model was looked for and what to do."""
    local = Path(model).expanduser()
    looks_local = model.startswith(("/", ".", "~")) or local.exists()
    if looks_local and not (local / "config.json").is_file():
        raise BadArgument("model", f"no model there (got {model}: {'no config.json in it' if local.is_dir() else 'no such directory'}; "
                                   "expected a directory saved with save_pretrained, or a hub id)")
    # An unreachable hub is asked once, here, instead of through minutes of retries per file.
    offline = not looks_local and not _hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local) if looks_local else model, revision=revision,
                                                  local_files_only=offline)
        where = str(local) if looks_local else model
        loaded = AutoModelForCausalLM.from_pretrained(where, revision=revision, dtype=dtype, local_files_only=offline) \
            if weights else AutoConfig.from_pretrained(where, revision=revision, local_files_only=offline)
    except OSError as exc:
        if offline:
            raise BadArgument("model", f"cannot load it (got {model}: the hub at {hub_constants.ENDPOINT} is "
                                       "unreachable and the model is not in the local cache; expected: run "
                                       f"`hf download {model}` where the hub is reachable, or point prompt.model "
                                       "at a local directory)") from None
        raise BadArgument("model", f"cannot load it (got {model}: {str(exc).splitlines()[0]}; expected a hub id "
                                   f"in the local cache or reachable: run `hf download {model}` where the hub is "
                                   "reachable, or point prompt.model at a local directory)") from None
    except ValueError as exc:
        raise BadArgument("model", f"cannot load it (got {model}: {str(exc).splitlines()[0]}; expected a causal "
                                   "language model with a fast tokenizer)") from None
    if not tokenizer.chat_template:
        raise BadArgument("model", f"its tokenizer has no chat template (got {model}; expected a chat/instruct "
                                   "model, or a chat_template.jinja beside the tokenizer)")
    return tokenizer, loaded.to(device).eval() if weights else loaded
