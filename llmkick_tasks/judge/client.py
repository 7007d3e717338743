"""OpenAI-compatible chat client for the judge: bounded concurrency, retries, on-disk cache.

lm-eval hands a filter all responses of a task at once, so every judge request of a task is known up
front; :meth:`JudgeClient.run` executes them concurrently (at most ``max_concurrency`` in flight) on an
asyncio loop of its own.  Each request is first looked up in the :class:`~.cache.ResponseCache`; identical
requests in flight share one HTTP call.  Retries are the ``openai`` client's own (``max_retries`` =
``judge_retries``): 408, 409, 429, 5xx, timeouts and dropped connections, with exponential backoff and
jitter, ``Retry-After`` honoured; any other HTTP error fails at once.  Every HTTP attempt is counted (an
``httpx`` request hook), so the log line still says how many retries a run needed.

A 2xx reply is checked (:func:`.replies.read_completion`) BEFORE it is cached: a body that is not a chat
completion (not JSON, an error object, no choices, no or empty message content, a refusal, a content-filter
stop) is an error of that request, asked again like a transient failure (at most ``judge_retries`` more
times), then failed naming the judge, its server, the HTTP status and a short excerpt of the body. Cache
entries that fail the same check (written by older versions) are treated as misses. Text from a server is
redacted (:meth:`.config.JudgeSettings.redact`) before it reaches a message or a log line.

A request may carry a reply regex (``judge_reply_format=regex``): it is sent as vLLM's
``structured_outputs: {"regex": ...}`` field (through the openai client's ``extra_body``) and, being part of
the payload, of the cache key, so a constrained reply is never served for a free request or the reverse.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import openai

from llmkick_tasks.judge.config import (
    OPENAI_URL,
    JudgeSettings,
    redact_url,
    server_identity,
)
from llmkick_tasks.judge.replies import (
    EXCERPT_CHARS,
    InvalidReply,
    excerpt,
    read_completion,
    usable_text,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

    from llmkick_tasks.judge.cache import ResponseCache


log = logging.getLogger(__name__)

T = TypeVar("T")
# v2: the key also holds the server and the judging protocol (v1 keys reused replies across servers).
CACHE_KEY_VERSION = "llmkick-judge-v2"
RETRYABLE_STATUS = {408, 409, 429}  # plus every 5xx
# vLLM's (>= 0.10) request field for a reply constraint; the openai client sends it through ``extra_body``.
STRUCTURED_OUTPUTS = "structured_outputs"
# Backoff before asking again after an invalid reply: as the openai client's (0.5 s doubling, up to 8 s).
INVALID_REPLY_BACKOFF_S = 0.5
INVALID_REPLY_MAX_BACKOFF_S = 8.0
# The openai client's HTTP layer logs every request at INFO: hundreds of lines per task.
TRANSPORT_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")


class JudgeRequestError(RuntimeError):
    """A judge request failed for good (non-retryable error, or retries exhausted)."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completion request; :meth:`cache_key` (server + protocol + payload) is its cache key."""

    model: str
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    temperature: float
    max_tokens: int
    protocol: str = ""  # the judging protocol that built the request (part of the key, not sent)
    reply_regex: str | None = None  # the reply must match it in full (vLLM structured outputs); None: free

    @classmethod
    def build(
        cls,
        model: str,
        messages: Sequence[dict[str, str]],
        temperature: float,
        max_tokens: int,
        protocol: str = "",
        reply_regex: str | None = None,
    ) -> ChatRequest:
        """A request from OpenAI-style ``[{"role": ..., "content": ...}]`` messages."""
        return cls(
            model,
            tuple((m["role"], m["content"]) for m in messages),
            float(temperature),
            int(max_tokens),
            protocol,
            reply_regex,
        )

    def payload(self) -> dict[str, Any]:
        """The JSON body sent to ``/chat/completions`` (also what the cache stores)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": role, "content": content} for role, content in self.messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.reply_regex is not None:
            body[STRUCTURED_OUTPUTS] = {"regex": self.reply_regex}
        return body

    def cache_key(self, server: str) -> str:
        """sha256 of the judge identity: ``server`` (:func:`.config.server_identity`), protocol, payload.

        Two servers may serve different weights under one model name, so a reply is reused only for the
        server that gave it.  Versioned, so a format change invalidates old entries.
        """
        identity = {"server": server, "protocol": self.protocol, "request": self.payload()}
        canonical = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(f"{CACHE_KEY_VERSION}\n{canonical}".encode()).hexdigest()

    @property
    def key(self) -> str:
        """:meth:`cache_key` for no particular server (for tests and tools; the client adds its server)."""
        return self.cache_key("")


@dataclass(frozen=True)
class ChatResult:
    """A reply and where it came from."""

    text: str
    cached: bool


@dataclass
class ClientStats:
    """Counters of one client; the request count is what a judging run costs."""

    requests: int = 0  # asked for (cache hits included)
    cached: int = 0  # answered from the on-disk cache (or by an identical request in flight)
    sent: int = 0  # requests answered over HTTP (the billable ones)
    attempts: int = 0  # HTTP attempts, first tries and retries
    failed: int = 0  # gave up
    invalid: int = 0  # 2xx replies that were no usable completion (asked again, never cached)
    stale: int = 0  # unusable cache entries (written by older versions) asked again
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def retries(self) -> int:
        """HTTP attempts beyond the first of each request that went over HTTP."""
        return max(0, self.attempts - self.sent - self.failed)

    def summary(self) -> str:
        """One log line."""
        line = (
            f"{self.requests} requests: {self.cached} from cache, {self.sent} sent "
            f"({self.retries} retries, {self.failed} failed), tokens in/out {self.prompt_tokens}/"
            f"{self.completion_tokens}"
        )
        if self.invalid or self.stale:
            line += f"; {self.invalid} invalid replies, {self.stale} unusable cache entries asked again"
        return line


def is_retryable(error: BaseException) -> bool:
    """True for rate limits, server errors, timeouts and dropped connections."""
    if isinstance(error, openai.APIStatusError):
        return error.status_code in RETRYABLE_STATUS or error.status_code >= 500
    return isinstance(error, (openai.APIConnectionError, openai.APITimeoutError))


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, also when a loop is already running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    # Called from inside a running loop (a notebook): run ours in a worker thread instead.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()  # type: ignore[arg-type]


@contextlib.contextmanager
def quiet_transport_logs() -> Iterator[None]:
    """Raise the HTTP transport loggers to WARNING for the duration, unless the user set their level."""
    changed = [
        logging.getLogger(n) for n in TRANSPORT_LOGGERS if logging.getLogger(n).level == logging.NOTSET
    ]
    for logger in changed:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger in changed:
            logger.setLevel(logging.NOTSET)


@dataclass
class _Session:
    """Per-run state, bound to one event loop."""

    api: openai.AsyncOpenAI
    semaphore: asyncio.Semaphore
    in_flight: dict[str, asyncio.Future[ChatResult]] = field(default_factory=dict)


class JudgeClient:
    """Chat completions against an OpenAI-compatible endpoint, with concurrency, retries and a cache."""

    def __init__(self, settings: JudgeSettings, cache: ResponseCache | None = None) -> None:
        self.settings = settings
        self.cache = cache
        self.stats = ClientStats()
        self.server = server_identity(settings.base_url)
        self._session: _Session | None = None

    # ------------------------------------------------------------------ running
    def run(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Run ``factory()`` (a coroutine using :meth:`complete`) with a fresh connection pool; blocks."""

        async def main() -> T:
            async def count_attempt(_request: Any) -> None:
                self.stats.attempts += 1

            api = openai.AsyncOpenAI(
                api_key=self.settings.api_key(),
                base_url=self.settings.base_url,
                timeout=self.settings.timeout,
                max_retries=self.settings.retries,
                http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [count_attempt]}),
            )
            self._session = _Session(api=api, semaphore=asyncio.Semaphore(self.settings.max_concurrency))
            try:
                return await factory()
            finally:
                self._session = None
                await api.close()

        started = time.monotonic()
        try:
            with quiet_transport_logs():
                return run_sync(main)
        finally:
            log.info("llmkick judge (%s): %s in %.1f s", self.settings.model, self.stats.summary(),
                     time.monotonic() - started)  # fmt: skip

    def complete_all(self, requests: Iterable[ChatRequest]) -> list[ChatResult]:
        """Answer all ``requests`` concurrently; raise :class:`JudgeRequestError` if any failed for good.

        Every reply that did arrive is cached before the error is raised, so a re-run resumes.
        """
        requests = list(requests)

        async def all_of_them() -> list[ChatResult]:
            return await gather_or_raise([self.complete(request) for request in requests])

        return self.run(all_of_them)

    # ------------------------------------------------------------------ one request
    async def complete(self, request: ChatRequest) -> ChatResult:
        """The reply to ``request``: from the cache, from an identical request in flight, or over HTTP."""
        if self._session is None:
            raise RuntimeError("JudgeClient.complete() must run inside JudgeClient.run()")
        self.stats.requests += 1
        key = request.cache_key(self.server)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and usable_text(hit.text):
                self.stats.cached += 1
                return ChatResult(hit.text, cached=True)
            if hit is not None:  # an empty reply cached by an older version: no verdict, ask again
                self.stats.stale += 1
                self.cache.discard(key)
        session = self._session
        pending = session.in_flight.get(key)
        if pending is not None:
            self.stats.cached += 1
            return await asyncio.shield(pending)
        future: asyncio.Future[ChatResult] = asyncio.get_running_loop().create_future()
        session.in_flight[key] = future
        try:
            result = await self._send(session, request, key)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        else:
            future.set_result(result)
            return result
        finally:
            session.in_flight.pop(key, None)

    async def _send(self, session: _Session, request: ChatRequest, key: str) -> ChatResult:
        payload = request.payload()
        standard = {name: value for name, value in payload.items() if name != STRUCTURED_OUTPUTS}
        extra = {name: value for name, value in payload.items() if name == STRUCTURED_OUTPUTS}
        for attempt in range(self.settings.retries + 1):
            try:
                async with session.semaphore:
                    raw = await session.api.chat.completions.with_raw_response.create(
                        **standard, extra_body=extra or None
                    )
            except openai.APIError as error:
                self.stats.failed += 1
                # No chaining: the openai error's message holds the server's body verbatim.
                raise JudgeRequestError(self._describe_failure(error)) from None
            status, body = raw.http_response.status_code, raw.http_response.text
            try:
                text, usage = read_completion(body)
            except InvalidReply as invalid:
                self.stats.invalid += 1
                problem = self._describe_invalid(status, invalid, body)
                if attempt == self.settings.retries:
                    self.stats.failed += 1
                    tries = f"{attempt + 1} attempts" if attempt else "1 attempt"
                    raise JudgeRequestError(f"{problem} (gave up after {tries})") from None
                if self.stats.invalid == 1:  # once per run: the summary line counts the others
                    log.warning("%s; asking again (judge_retries=%d)", problem, self.settings.retries)
                await asyncio.sleep(min(INVALID_REPLY_BACKOFF_S * 2**attempt, INVALID_REPLY_MAX_BACKOFF_S))
                continue
            if usage is not None:
                self.stats.prompt_tokens += usage["prompt_tokens"]
                self.stats.completion_tokens += usage["completion_tokens"]
            self.stats.sent += 1
            if self.cache is not None:
                self.cache.put(key, request.model, payload, text, usage)
            return ChatResult(text, cached=False)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _judge_name(self) -> str:
        where = redact_url(self.settings.base_url) or OPENAI_URL
        return f"judge {self.settings.model!r} at {where}"

    def _describe_invalid(self, status: int, invalid: InvalidReply, body: str) -> str:
        redact = self.settings.redact
        return (
            f"{self._judge_name()} sent no usable reply: HTTP {status} with {redact(str(invalid))}; "
            f"body: {excerpt(redact(body))!r}"
        )

    def _describe_failure(self, error: openai.APIError) -> str:
        status = getattr(error, "status_code", None)
        what = f"HTTP {status}" if status else type(error).__name__
        hint = ""
        if status in (401, 403):
            hint = " (check the API key in $LLMKICK_JUDGE_API_KEY / $OPENAI_API_KEY)"
        elif status == 404:
            hint = f" (does the server serve the model {self.settings.model!r}?)"
        retried = is_retryable(error) and self.settings.retries
        tries = f" after {self.settings.retries + 1} attempts" if retried else ""
        detail = error.message
        if status is None and error.__cause__ is not None:  # a connection error: say what broke
            detail += f" ({type(error.__cause__).__name__}: {error.__cause__})"
        detail = excerpt(self.settings.redact(detail), 2 * EXCERPT_CHARS)
        return f"{self._judge_name()}: request failed{tries}: {what}{hint}: {detail}"


async def gather_or_raise(awaitables: Sequence[Awaitable[T]], what: str = "judge requests") -> list[T]:
    """Await all; if some failed, raise one :class:`JudgeRequestError` after all others have finished."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        unexpected = [e for e in errors if not isinstance(e, JudgeRequestError)]
        if unexpected:
            raise unexpected[0]
        raise JudgeRequestError(
            f"{len(errors)} of {len(results)} {what} failed; every answered request is cached, so "
            f"re-running resumes where this stopped. First error: {errors[0]}"
        ) from errors[0]
    return results  # type: ignore[return-value]
