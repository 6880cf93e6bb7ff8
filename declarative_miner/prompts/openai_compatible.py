"""Any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp, Ollama, ...) as the prompt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from typing import Any, AsyncIterator, Iterator, Optional

import httpx

from ..errors import BadGateway, OverCapacity, Unavailable
from ..imports import BadArgument, MissingDependency
from ..prompting import Prompting, chat_of
from .usage import Usage

try:
    import openai
except ImportError as exc:
    raise MissingDependency("the openai prompt", exc.name, "pip install '.[openai]' in the clone (README: Models)") from exc

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0  # seconds the start-up look at the server may take


class OpenAICompatible:
    """Forwards a request's chat to `base_url`'s `/chat/completions` and streams the answer back.

    The miner stays thin: the model runs wherever the server does (a vLLM or SGLang cluster, say).
    A server that is down or overloaded makes requests fail with 503 and a reason; the miner keeps
    serving and recovers when the server does. The answer is always requested as a stream, so
    the first text reaches the validator early and an abandoned request stops the server's work.

    Args:
        base_url: the server's OpenAI API root, e.g. http://127.0.0.1:8000/v1.
        model: the model name the server serves.
        api_key_env: the environment variable holding the API key (never the key itself);
            unset means no key, which local servers accept.
        max_tokens, temperature, top_p: sampling, sent with every request.
        system_prompt: a system message put first when the request carries none.
        extra_body: server-specific fields merged into each request (e.g. vLLM's `top_k`).
        timeout: seconds to connect and between streamed chunks.
        api_key: refused: a key belongs in the environment (`api_key_env`), never in YAML or a log.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", max_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0, system_prompt: Optional[str] = None,
                 extra_body: Optional[dict[str, Any]] = None, timeout: float = 30.0, api_key: None = None):
        if api_key is not None:
            raise BadArgument("api_key", f"a key is never written in the config (got a value; expected it in the "
                                         f"environment variable prompt.api_key_env names: {api_key_env}=... before "
                                         "the command, or in the service's EnvironmentFile)")
        if not base_url.startswith(("http://", "https://")):
            raise BadArgument("base_url", f"not a URL (got {base_url!r}; expected http(s)://host:port/v1)")
        if max_tokens < 1:
            raise BadArgument("max_tokens", f"out of range (got {max_tokens}; expected at least 1)")
        self.base_url, self.model, self.system_prompt = base_url.rstrip("/"), model, system_prompt
        self.sampling = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p)
        self.extra_body, self.timeout = dict(extra_body or {}), timeout
        self.api_key = os.environ.get(api_key_env) or "none"
        self.usage = Usage()
        self._client: Optional[tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI]] = None
        self._probe()

    def __repr__(self) -> str:
        return f"OpenAICompatible({self.model!r} at {self.base_url})"

    def probe(self) -> Optional[str]:
        """Why the model server cannot answer now (unreachable, or not serving `model`), or None.
        Blocking: the miner runs it in the background for `GET /ready`, never on a request."""
        try:
            answer = httpx.get(f"{self.base_url}/models", timeout=PROBE_TIMEOUT,
                               headers={"authorization": f"Bearer {self.api_key}"})
            answer.raise_for_status()
            served = [entry.get("id") for entry in answer.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return f"the model server at {self.base_url} does not answer ({type(exc).__name__}: {exc})"
        if self.model not in served:
            return f"the model server at {self.base_url} lists {served}, not {self.model!r}"
        return None

    def _probe(self) -> None:
        """Say at start-up whether the server answers and serves `model`; never fatal, since the
        server may well start after the miner."""
        problem = self.probe()
        if problem:
            log.warning("%s: requests get 503 until it does (GET /ready says so meanwhile)", problem)
        else:
            log.info("The model server at %s serves %s", self.base_url, self.model)

    def _client_here(self) -> openai.AsyncOpenAI:
        # A client's connection pool belongs to the event loop that opened it: a new loop (the miner
        # restarted in-process) gets a new client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client[0] is not loop:
            self._client = (loop, openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                                     timeout=self.timeout, max_retries=0))
        return self._client[1]

    async def aclose(self) -> None:
        """Close this event loop's connections to the server (the miner calls it as it stops)."""
        if self._client is not None and self._client[0] is asyncio.get_running_loop():
            client, self._client = self._client[1], None
            await client.close()

    async def __call__(self, request: Prompting, max_tokens: Optional[int] = None) -> AsyncIterator[str]:
        """Yield the server's answer as it streams in: at most `max_tokens` tokens (a request's own
        bound, which a request type's `arguments` may pass), never more than the configured one."""
        sampling = self.sampling if max_tokens is None else \
            {**self.sampling, "max_tokens": max(1, min(int(max_tokens), self.sampling["max_tokens"]))}
        with _as_request_errors(self.base_url, self.api_key if self.api_key != "none" else ""):
            stream = await self._client_here().chat.completions.create(
                model=self.model, messages=chat_of(request, self.system_prompt), stream=True,
                stream_options={"include_usage": True}, extra_body=self.extra_body or None, **sampling)
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        self.usage.add(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield choice.delta.content


_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an error code or type, as OpenAI-style servers name them


def _upstream(exc: "openai.APIStatusError", secret: str) -> str:
    """What the caller may learn of a server's refusal: its status and (if it names one) its error
    code. Never the server's own text, which may quote a prompt, a path or the API key: that goes
    to the miner's log, with the key blanked out."""
    text = str(exc.message)
    log.warning("the model server answered %s: %s", exc.status_code, text.replace(secret, "***") if secret else text)
    code = getattr(exc, "code", None) or getattr(exc, "type", None)
    named = f", {code}" if isinstance(code, str) and _CODE.fullmatch(code) else ""
    return f"HTTP {exc.status_code}{named}"


@contextlib.contextmanager
def _as_request_errors(base_url: str, secret: str) -> Iterator[None]:
    """The server's failures as the miner's answers: 503 when it is down or busy, else 502."""
    try:
        yield
    except openai.APIConnectionError as exc:
        raise Unavailable(f"the model server at {base_url} is unreachable ({type(exc).__name__})",
                          headers={"retry-after": "5"}) from None
    except openai.RateLimitError as exc:
        raise OverCapacity(f"the model server is rate limiting ({_upstream(exc, secret)})",
                           headers={"retry-after": "1"}) from None
    except openai.InternalServerError as exc:
        raise Unavailable(f"the model server failed ({_upstream(exc, secret)})", headers={"retry-after": "5"}) from None
    except openai.APIStatusError as exc:
        raise BadGateway(f"the model server refused the request ({_upstream(exc, secret)})") from None
    except openai.APIError as exc:
        log.warning("the model server's answer is not understood: %s", exc)
        raise BadGateway("the model server's answer is not understood") from None
