"""Judge settings: resolved from the environment and the task metadata, validated before any work is done.

Every setting is a knob declared in :mod:`llmkick_tasks.judge.knobs` (parser, default, environment
variables); precedence: ``--metadata`` (task metadata) > environment variable > default.  The API key
is the one exception: it is read ONLY from the environment (``LLMKICK_JUDGE_API_KEY``, else
``OPENAI_API_KEY``), at the moment a client is built, and is never stored in these settings, so it cannot
end up in a log line, a results JSON (lm-eval dumps task metadata there) or the response cache.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from llmkick_tasks.errors import UserError
from llmkick_tasks.judge.knobs import (
    DEFAULT_OPENAI_JUDGE,
    DEFAULT_OPENAI_REFERENCE,
    ENV_BASE_URL,
    ENV_CACHE,
    ENV_MODEL,
    JUDGE_KNOBS,
    JUDGED_DATA_KNOBS,
    MAX_TOKENS,
    REPLY_FORMAT,
    REPLY_FREE,
    TEMPERATURE,
)
from llmkick_tasks.knobs import Knob, KnobError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


log = logging.getLogger(__name__)

ENV_API_KEY = "LLMKICK_JUDGE_API_KEY"
ENV_OPENAI_API_KEY = "OPENAI_API_KEY"

# A local server needs no key, but the openai client refuses an empty one; this is what vLLM documents.
NO_KEY_PLACEHOLDER = "EMPTY"

# Metadata keys that would smuggle a secret into lm-eval's results JSON: refused outright.
FORBIDDEN_KEYS = ("judge_api_key", "api_key", "openai_api_key")
# Knobs of earlier versions that no score depends on: accepted, with a warning that they do nothing.
REMOVED_KEYS = ("judge_backoff", "judge_max_backoff")


class JudgeConfigError(UserError):
    """The judge is missing or misconfigured; the message says what to set."""


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/llmkick/judge_cache.sqlite`` (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(root) / "llmkick" / "judge_cache.sqlite"


def redact_url(url: str | None) -> str | None:
    """``url`` without user:password, safe to log."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, f"***@{netloc}", parts.path, parts.query, parts.fragment))


# Secrets a server may echo in an error body: an Authorization header's token (Bearer: the key; Basic: the
# base URL's user:password, which httpx sends), an OpenAI-style key, URL credentials.
SECRET_PATTERNS = (
    (re.compile(r"\b(Bearer|Basic)\s+\S+", re.IGNORECASE), r"\1 ***"),
    (re.compile(r"sk-[A-Za-z0-9_-]{8,}"), "sk-***"),
    (re.compile(r"(?<=://)[^/\s@]+@"), "***@"),
)
# A configured secret shorter than this is not searched for: it would garble every message, protect nothing.
MIN_SECRET_CHARS = 4


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every configured secret and anything shaped like a key or URL credentials masked."""
    for secret in sorted((s for s in secrets if s and len(s) >= MIN_SECRET_CHARS), key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern, mask in SECRET_PATTERNS:
        text = pattern.sub(mask, text)
    return text


OPENAI_URL = "https://api.openai.com/v1"
OPENAI_HOST = "api.openai.com"


def server_identity(url: str | None) -> str:
    """The server a reply came from, as part of its cache key: scheme, host, port and path only.

    Credentials and query strings are left out (they may hold secrets and do not change the server).
    """
    parts = urlsplit(url or OPENAI_URL)
    host = (parts.hostname or "").lower()
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


SQLITE_HEADER = b"SQLite format 3\x00"


def check_cache_file(path: Path, task: str = "this task") -> None:
    """Refuse a judge cache path that cannot be a sqlite file (a folder, another file) before any work."""
    problem = None
    if path.is_dir():
        problem = "is a directory"
    elif path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                problem = "is not a sqlite file"
    if problem:
        raise JudgeConfigError(
            f"{task}: the judge cache {path} {problem}; point judge_cache (--metadata) or ${ENV_CACHE} at a "
            f"new or existing cache file"
        )


def read_knob(
    knob: Knob, metadata: Mapping[str, Any], task: str | None = None, environ: Mapping[str, str] | None = None
) -> Any:
    """``knob``'s value (``--metadata``, its environment variables, its default) for the judged ``task``;
    :class:`JudgeConfigError` naming the task, the key and what is allowed.
    """
    try:
        return knob.read(metadata, environ)
    except KnobError as error:
        raise JudgeConfigError(f"{task}: {error.must_be()}" if task else error.must_be()) from None


@dataclass(frozen=True)
class JudgeSettings:
    """Everything needed to reach the judge, except the API key (see :meth:`api_key`)."""

    model: str
    base_url: str | None
    temperature: float = 0.2
    max_tokens: int = 1024
    # Which of temperature / max_tokens were given explicitly: the paper and fastchat protocols otherwise
    # use the sampling of their own release files.
    sampling_given: frozenset[str] = frozenset()
    max_concurrency: int = 16
    timeout: float = 120.0
    retries: int = 6
    cache_path: Path = field(default_factory=default_cache_path)
    templates_dir: Path | None = None
    swap: bool = False
    protocol: str = "llmkick"
    reply_format: str = REPLY_FREE
    reference_model: str = DEFAULT_OPENAI_REFERENCE
    reference_temperature: float = 0.0
    reference_max_tokens: int = 1024
    # Name of the environment variable the key comes from (never the key itself); None: keyless server.
    api_key_env: str | None = None
    # The environment the settings were resolved from; the key is looked up there when needed.
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)

    def api_key(self) -> str:
        """The API key, read from the environment now (never cached on this object)."""
        if self.api_key_env:
            key = self.environ.get(self.api_key_env)
            if key:
                return key
            if self.base_url is None:
                raise JudgeConfigError(f"${self.api_key_env} was unset after the judge was configured")
        return NO_KEY_PLACEHOLDER

    def redact(self, text: str) -> str:
        """``text`` (from a server: an error body, an exception) safe to log: see :func:`redact_text`."""
        parts = urlsplit(self.base_url or "")
        key = self.environ.get(self.api_key_env) if self.api_key_env else None
        return redact_text(text, (key, parts.password, parts.username))

    def describe(self) -> dict[str, Any]:
        """The settings as plain data, safe to log or to write into results (no key, URL redacted)."""
        return {
            "model": self.model,
            "base_url": redact_url(self.base_url) or "https://api.openai.com/v1",
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "max_concurrency": self.max_concurrency,
            "timeout": self.timeout,
            "retries": self.retries,
            "cache": str(self.cache_path),
            "templates": str(self.templates_dir) if self.templates_dir else "built-in",
            "swap": self.swap,
            "protocol": self.protocol,
            "reply_format": self.reply_format,
            "reference_model": self.reference_model,
            "api_key_from": self.api_key_env or "none (keyless server)",
        }

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, Any] | None,
        *,
        task: str = "this task",
        environ: Mapping[str, str] | None = None,
    ) -> JudgeSettings:
        """Resolve and validate the judge for ``task``; raise :class:`JudgeConfigError` with advice.

        Every knob of :data:`~llmkick_tasks.judge.knobs.JUDGE_KNOBS` fills the setting it names; the knobs
        of the judged data (:data:`~llmkick_tasks.judge.knobs.JUDGED_DATA_KNOBS`) are checked too.
        """
        meta = dict(metadata or {})
        env = os.environ if environ is None else environ
        _refuse_secrets(meta, task)
        _warn_removed(meta, task)
        values = {knob.field: read_knob(knob, meta, task, env) for knob in JUDGE_KNOBS}
        for knob in JUDGED_DATA_KNOBS:
            read_knob(knob, meta, task)
        key_env = next((name for name in (ENV_API_KEY, ENV_OPENAI_API_KEY) if env.get(name)), None)
        base_url = values["base_url"] = _checked_base_url(values["base_url"], key_env, task)
        model = values["model"] = _judge_model(values["model"], base_url, task)
        _check_reply_format(values["reply_format"], base_url, task)
        if values["reference_model"] is None:
            # On OpenAI the paper's reference model exists; on a private server the judge model writes them.
            values["reference_model"] = DEFAULT_OPENAI_REFERENCE if base_url is None else model
        if values["templates_dir"] is not None and not values["templates_dir"].is_dir():
            raise JudgeConfigError(
                f"{task}: judge templates directory does not exist: {values['templates_dir']}"
            )
        values["cache_path"] = values["cache_path"] or default_cache_path()
        check_cache_file(values["cache_path"], task)
        # The paper and fastchat protocols use their own files' sampling unless it was given explicitly.
        given = frozenset(knob.field for knob in (TEMPERATURE, MAX_TOKENS) if knob.given(meta))
        return cls(**values, sampling_given=given, api_key_env=key_env, environ=env)


def _refuse_secrets(meta: Mapping[str, Any], task: str) -> None:
    forbidden = [key for key in FORBIDDEN_KEYS if key in meta]
    if forbidden:
        raise JudgeConfigError(
            f"{task}: {forbidden[0]!r} was given in the metadata. API keys are read only from the "
            f"environment (${ENV_API_KEY} or ${ENV_OPENAI_API_KEY}) so that they never reach lm-eval's "
            f"results files or logs; remove it from --metadata / --model_args."
        )


def _warn_removed(meta: Mapping[str, Any], task: str) -> None:
    for removed in REMOVED_KEYS:
        if removed in meta:  # harmless (no score depends on it), but say that it does nothing
            log.warning(
                "%s: metadata %r is ignored: retries use the openai client's backoff (Retry-After "
                "honoured); judge_retries sets how many",
                task,
                removed,
            )


def _checked_base_url(base_url: str | None, key_env: str | None, task: str) -> str | None:
    """The judge server's URL (``None``: OpenAI); refused when there is neither a server nor a key."""
    if base_url is None and key_env is None:
        raise JudgeConfigError(
            f"{task} is scored by an LLM judge, but no judge is configured. Set one of:\n"
            f"  * ${ENV_API_KEY} (or ${ENV_OPENAI_API_KEY}) to judge with OpenAI "
            f"(model ${ENV_MODEL}, default {DEFAULT_OPENAI_JUDGE});\n"
            f"  * ${ENV_BASE_URL} and ${ENV_MODEL} for an OpenAI-compatible server (vLLM, llama.cpp),"
            f' or --metadata \'{{"judge_base_url": "http://host:8000/v1", "judge_model": "name"}}\'.\n'
            f"Nothing was loaded or generated."
        )
    if base_url is not None and (
        urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname
    ):
        raise JudgeConfigError(
            f"{task}: judge base URL must be http(s)://host..., got {redact_url(base_url)!r}"
        )
    return base_url


def _check_reply_format(reply_format: str, base_url: str | None, task: str) -> None:
    """Refuse a constrained reply on OpenAI's own API, which rejects the request field that carries it."""
    if reply_format != REPLY_FREE and urlsplit(server_identity(base_url)).hostname == OPENAI_HOST:
        raise JudgeConfigError(
            f"{task}: {REPLY_FORMAT.name}={reply_format!r} needs a judge server that honours vLLM's "
            f"structured outputs (vLLM >= 0.10); OpenAI's API ({redact_url(base_url) or OPENAI_URL}) rejects "
            f"the field. Use {REPLY_FORMAT.name}={REPLY_FREE!r} or a vLLM judge (judge_base_url)."
        )


def _judge_model(model: str | None, base_url: str | None, task: str) -> str:
    """The judge model: given, else OpenAI's default; a private server must name the model it serves."""
    if model is not None:
        return model
    if base_url is not None:
        raise JudgeConfigError(
            f"{task}: the judge server {redact_url(base_url)} is configured but not the model it "
            f'serves: set ${ENV_MODEL} or --metadata \'{{"judge_model": "name"}}\'.'
        )
    return DEFAULT_OPENAI_JUDGE
