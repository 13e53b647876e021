"""Generation through any OpenAI-compatible `/v1/completions` server: `vllm serve`, SGLang, TGI,
`transformers serve`. This is how generation scales past one machine: start one server per GPU
node and list them all in `generate.openai.base_urls`.

Requests are sent asynchronously (httpx), at most `concurrency` at a time over all servers, each
to the least-loaded server (ties taken in turn). Connection errors, timeouts, HTTP 429 and 5xx are
retried with exponential backoff and jitter, on whichever server is then least loaded, so a dead
replica costs retries, not the run. Completions come back in prompt order.

`n` completions per prompt: the request asks for `n`; a server that ignores `n` (`transformers
serve` does) answers with one choice, and the missing ones are asked for one by one with seeds
`seed + 1`, `seed + 2`, ... (later prompts then go straight to that form), so each completion still
has its own reproducible seed.

Token counting (for passage splitting) uses the generator's tokenizer when `generate.tokenizer`
or `generate.model` can be loaded here; otherwise it estimates one token per 4 characters, a
common rule of thumb for English BPE vocabularies. The context window comes from `/v1/models`
when the server reports it (`max_model_len`: vLLM, SGLang), else it is unknown (None).

The API key is read from the environment variable named by `api_key_env` and only ever sent as
an `Authorization: Bearer` header. `user:password@` in a base URL is sent as basic auth, never as
part of a logged URL; URLs in messages have credentials and query strings redacted.

`transformers serve` samples only when the model's `generation_config.json` sets `do_sample:
true`; otherwise it decodes greedily whatever the temperature (vLLM and SGLang sample when
temperature > 0). It also runs one request at a time and seeds the global torch generator per
request, so its samples are reproducible only with `concurrency: 1`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import UserError
from ..models import load_tokenizer
from .spec import EngineSpec, SamplingConfig, redact_url

__all__ = ["OpenAIEngine", "redact_url", "CHARS_PER_TOKEN"]

logger = logging.getLogger(__name__)

# Token estimate used when no tokenizer can be loaded locally.
CHARS_PER_TOKEN = 4
# Retry delays double from `backoff_s` up to this cap.
MAX_BACKOFF_S = 30.0
# `/v1/models` is only a reachability and context-length probe: it is retried less than completions.
PROBE_RETRIES = 2

_T = TypeVar("_T")


def normalize_base_url(url: str, field: str = "generate.openai.base_urls") -> str:
    """Accept `http://host:8000` as well as the OpenAI-style `http://host:8000/v1`."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"{field}: {redact_url(url)!r} is not an http(s) URL; "
                        "write e.g. http://127.0.0.1:8000/v1")
    if parts.path in ("", "/"):
        url = urlunsplit((parts.scheme, parts.netloc, "/v1", parts.query, ""))
    return url


def run_sync(make_coroutine: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine from sync code, also when an event loop is already running (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    # asyncio.run refuses to nest inside a running loop: give the coroutine a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


@dataclass
class _Replica:
    url: str  # normalized base URL, ending in /v1 (or the user's own path), without user:password
    auth: tuple[str, str] | None = None  # user:password of the URL, sent as HTTP basic auth
    in_flight: int = 0
    failures: int = 0  # consecutive failed attempts; a failing replica is chosen last

    @classmethod
    def from_url(cls, url: str) -> _Replica:
        # Credentials leave the URL so that no log line (httpx logs every request's URL) shows them.
        parts = urlsplit(url)
        if parts.username is None:
            return cls(url)
        host = parts.netloc.rsplit("@", 1)[1]
        auth = (unquote(parts.username), unquote(parts.password or ""))
        return cls(urlunsplit((parts.scheme, host, parts.path, parts.query, "")), auth)

    @property
    def shown(self) -> str:
        return redact_url(self.url)


class _RetryableError(Exception):
    """A failed attempt worth retrying (connection error, timeout, 429, 5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class OpenAIEngine:
    """Completions from one or more OpenAI-compatible servers (see the module docstring)."""

    name = "openai"

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.settings = spec.openai
        self._where = spec.field("openai")  # how messages name these settings
        self.model_name = self.settings.model_name or spec.model
        urls = [normalize_base_url(url, f"{self._where}.base_urls") for url in self.settings.base_urls]
        if not urls:
            raise UserError(f"{self._where}.base_urls is empty; list at least one server, e.g. http://127.0.0.1:8000/v1")
        self._replicas = [_Replica.from_url(url) for url in dict.fromkeys(urls)]
        self._turn = 0
        self._server_ignores_n = False
        self._max_context: int | None = None
        # Called with (completed prompts, total prompts) as completions arrive; tqdm shows the same.
        self.on_progress: Callable[[int, int], None] | None = None
        self.show_progress = True
        run_sync(self._probe_servers)
        self._tokenizer = self._load_local_tokenizer()

    # ----- interface -----

    @property
    def max_context(self) -> int | None:
        return self._max_context

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return math.ceil(len(text) / CHARS_PER_TOKEN)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[list[str]]:
        if not prompts:
            return []
        return run_sync(lambda: self._generate_all(prompts, sampling))

    def close(self) -> None:
        # Each generate() call opens and closes its own HTTP client; nothing stays open.
        self._tokenizer = None

    # ----- setup -----

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.settings.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _load_local_tokenizer(self):
        name, field, gguf_file = self.spec.tokenizer_source
        try:
            return load_tokenizer(name, field=field, gguf_file=gguf_file, trust_remote_code=self.spec.trust_remote_code)
        except UserError as error:
            logger.warning("%s; counting tokens as characters/%d (set %s to a local tokenizer folder "
                           "for exact passage lengths)", error, CHARS_PER_TOKEN, self.spec.field("tokenizer"))
            return None

    async def _probe_servers(self) -> None:
        """Check which servers answer `GET /models` and read the context length they report."""
        async with self._client() as client:
            answers = await asyncio.gather(*(self._probe(client, replica) for replica in self._replicas))
        alive = [replica for replica, (ok, _) in zip(self._replicas, answers, strict=True) if ok]
        if not alive:
            reasons = "; ".join(f"{replica.shown}: {reason}" for replica, (_, reason) in zip(self._replicas, answers, strict=True))
            raise UserError(
                f"{self._where}.base_urls: no OpenAI-compatible server answers ({reasons}); start one with "
                f"`vllm serve {self.model_name}` (or `transformers serve {self.model_name}`) and list its "
                "http://HOST:PORT/v1 in base_urls"
            )
        for replica, (ok, reason) in zip(self._replicas, answers, strict=True):
            if not ok:
                logger.warning("%s: server %s does not answer (%s); using the other %d", self._where,
                               replica.shown, reason, len(alive))
        self._replicas = alive
        lengths = [length for ok, length in answers if ok and isinstance(length, int)]
        self._max_context = min(lengths) if lengths else None

    async def _probe(self, client, replica: _Replica) -> tuple[bool, int | str | None]:
        """(answers?, max_model_len or None) or (False, reason)."""
        import httpx

        reason = ""
        for attempt in range(min(PROBE_RETRIES, self.settings.max_retries) + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt))
            try:
                response = await client.get(f"{replica.url}/models", headers=self._headers(), auth=replica.auth,
                                            timeout=min(self.settings.timeout_s, 30.0))
            except httpx.TimeoutException:
                reason = "no answer in time"
                continue
            except httpx.TransportError as error:
                reason = _describe_transport_error(error)
                continue
            if response.status_code in (401, 403):
                raise UserError(
                    f"{self._where}: the server at {replica.shown} refused the API key (HTTP {response.status_code}); "
                    f"put a valid key in the environment variable {self.settings.api_key_env}"
                )
            if response.status_code == 429 or response.status_code >= 500:
                reason = f"HTTP {response.status_code}"
                continue
            # A server without /models (HTTP 404) still answers; it just does not say its context length.
            return True, self._reported_max_len(response) if response.is_success else None
        return False, reason

    def _reported_max_len(self, response) -> int | None:
        try:
            models = response.json().get("data") or []
        except (ValueError, AttributeError):
            return None
        chosen = [m for m in models if isinstance(m, dict) and m.get("id") == self.model_name]
        if not chosen and len(models) == 1 and isinstance(models[0], dict):
            chosen = models
        value = chosen[0].get("max_model_len") if chosen else None
        return value if isinstance(value, int) and value > 0 else None

    # ----- generation -----

    def _client(self):
        import httpx

        limits = httpx.Limits(max_connections=self.settings.concurrency,
                              max_keepalive_connections=self.settings.concurrency)
        return httpx.AsyncClient(limits=limits, timeout=self.settings.timeout_s)

    async def _generate_all(self, prompts: list[str], sampling: SamplingConfig) -> list[list[str]]:
        from tqdm.auto import tqdm

        self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        results: list[list[str] | None] = [None] * len(prompts)
        async with self._client() as client:

            async def one(index: int) -> None:
                results[index] = await self._completions_for(client, prompts[index], sampling)

            tasks = [asyncio.create_task(one(i)) for i in range(len(prompts))]
            with tqdm(total=len(prompts), desc="generate (openai)", unit="prompt",
                      disable=not self.show_progress, leave=False) as bar:
                try:
                    for done_count, finished in enumerate(asyncio.as_completed(tasks), start=1):
                        await finished
                        bar.update(1)
                        if self.on_progress is not None:
                            self.on_progress(done_count, len(prompts))
                except BaseException:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
        return results  # type: ignore[return-value]  # every task has filled its slot

    async def _completions_for(self, client, prompt: str, sampling: SamplingConfig) -> list[str]:
        """`sampling.n` completions of one prompt, asking for `n` at once while the server honours it."""
        texts: list[str] = []
        if sampling.n == 1 or not self._server_ignores_n:
            texts = await self._complete(client, prompt, sampling, n=sampling.n, seed=sampling.seed)
            if len(texts) >= sampling.n:
                return texts[: sampling.n]
            if not self._server_ignores_n:
                self._server_ignores_n = True
                logger.info("%s: the server answered %d of n=%d completions; asking for the others "
                            "one by one with their own seeds", self._where, len(texts), sampling.n)
        missing = range(len(texts), sampling.n)
        more = await asyncio.gather(*(self._complete(client, prompt, sampling, n=1, seed=sampling.seed + i)
                                      for i in missing))
        return texts + [answer[0] for answer in more]

    async def _complete(self, client, prompt: str, sampling: SamplingConfig, n: int, seed: int) -> list[str]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "prompt": prompt,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": seed,
        }
        if n > 1:
            body["n"] = n
        replica, data = await self._post(client, "/completions", body)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in choices):
            raise UserError(f"{self._where}: the server at {replica.shown} answered /completions without "
                            f"completions ({str(data)[:200]!r}); is it an OpenAI-compatible server?")
        return [choice["text"] for choice in sorted(choices, key=lambda c: c.get("index") or 0)]

    def _pick_replica(self) -> _Replica:
        """The least-loaded replica, failing ones last, ties taken in turn."""
        self._turn += 1
        count = len(self._replicas)
        in_turn = [self._replicas[(self._turn + i) % count] for i in range(count)]
        return min(in_turn, key=lambda r: (r.failures > 0, r.in_flight))

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        delay = min(MAX_BACKOFF_S, self.settings.backoff_s * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter, so retries from many requests do not arrive together
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_BACKOFF_S))
        return delay

    async def _post(self, client, path: str, body: dict[str, Any]) -> tuple[_Replica, Any]:
        attempts = self.settings.max_retries + 1
        retry_after: float | None = None
        reason = ""
        replica = self._replicas[0]
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._backoff(attempt, retry_after))
            async with self._semaphore:
                replica = self._pick_replica()
                replica.in_flight += 1
                try:
                    data = await self._attempt(client, replica, path, body)
                except _RetryableError as error:
                    replica.failures += 1
                    reason, retry_after = str(error), error.retry_after
                    logger.debug("%s: attempt %d/%d at %s failed (%s)", self._where, attempt + 1, attempts,
                                 replica.shown, reason)
                    continue
                finally:
                    replica.in_flight -= 1
            replica.failures = 0
            return replica, data
        hint = (f"raise {self._where}.timeout_s (now {self.settings.timeout_s:g}) or lower concurrency"
                if "no answer within" in reason else "check the server's log")
        raise UserError(f"{self._where}: {path} failed {attempts} times, last at {replica.shown} ({reason}); {hint}")

    async def _attempt(self, client, replica: _Replica, path: str, body: dict[str, Any]) -> Any:
        import httpx

        try:
            response = await client.post(f"{replica.url}{path}", json=body, headers=self._headers(),
                                         auth=replica.auth, timeout=self.settings.timeout_s)
        except httpx.TimeoutException:
            raise _RetryableError(f"no answer within {self.settings.timeout_s:g} s") from None
        except httpx.TransportError as error:
            raise _RetryableError(_describe_transport_error(error)) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _RetryableError(f"HTTP {status}: {_detail(response)}", _retry_after(response))
        if status >= 400:
            raise UserError(self._rejection_message(replica, response))
        try:
            return response.json()
        except ValueError:
            raise _RetryableError(f"an answer that is not JSON: {response.text[:100]!r}") from None

    def _rejection_message(self, replica: _Replica, response) -> str:
        status, detail = response.status_code, _detail(response)
        where = f"{self._where}: the server at {replica.shown} rejected the request (HTTP {status}: {detail})"
        if status in (401, 403):
            return f"{where}; put a valid API key in the environment variable {self.settings.api_key_env}"
        if "model" in detail.lower():
            return (f"{where}; set {self._where}.model_name to the model the server serves "
                    f"(now {self.model_name!r}; see {replica.shown}/models)")
        return f"{where}; check the sampling settings against what the server accepts"


def _detail(response) -> str:
    """The server's own error message, short and on one line."""
    try:
        data = response.json()
        detail = data.get("detail") or data.get("error") or data.get("message") or data
        if isinstance(detail, dict):
            detail = detail.get("message") or detail
    except (ValueError, AttributeError):
        detail = response.text
    return " ".join(str(detail).split())[:200] or response.reason_phrase


def _retry_after(response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _describe_transport_error(error: Exception) -> str:
    # httpx messages may carry the URL (with credentials); keep the exception type and the OS reason only.
    text = str(error)
    if "://" in text:
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
