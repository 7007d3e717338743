"""Judge settings: resolved from the environment and the task metadata, validated before any work is done.

Precedence for every setting: ``--metadata`` (task metadata) > environment variable > default.  The API key
is the one exception: it is read ONLY from the environment (``LLMKICK_JUDGE_API_KEY``, else
``OPENAI_API_KEY``), at the moment a client is built, and is never stored in these settings, so it cannot
end up in a log line, a results JSON (lm-eval dumps task metadata there) or the response cache.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

ENV_MODEL = "LLMKICK_JUDGE_MODEL"
ENV_BASE_URL = "LLMKICK_JUDGE_BASE_URL"
ENV_API_KEY = "LLMKICK_JUDGE_API_KEY"
ENV_OPENAI_API_KEY = "OPENAI_API_KEY"
ENV_OPENAI_BASE_URL = "OPENAI_BASE_URL"
ENV_CACHE = "LLMKICK_JUDGE_CACHE"
ENV_TEMPLATES = "LLMKICK_JUDGE_TEMPLATES"
ENV_REFERENCE_MODEL = "LLMKICK_REFERENCE_MODEL"

# GPT-4-class judge when talking to OpenAI itself; an OpenAI-compatible server must name its model.
DEFAULT_OPENAI_JUDGE = "gpt-4o"
# LLM-KICK's pairwise "Assistant 1" answers came from gpt-3.5-turbo.
DEFAULT_OPENAI_REFERENCE = "gpt-3.5-turbo"
# A local server needs no key, but the openai client refuses an empty one; this is what vLLM documents.
NO_KEY_PLACEHOLDER = "EMPTY"

# Metadata keys that would smuggle a secret into lm-eval's results JSON: refused outright.
FORBIDDEN_KEYS = ("judge_api_key", "api_key", "openai_api_key")

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class JudgeConfigError(ValueError):
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
# Judging protocols: llmkick's own templates, LLM-KICK's release files, FastChat's MT-Bench judge prompts.
PROTOCOLS = ("llmkick", "paper", "fastchat")


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


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise JudgeConfigError(f"metadata {name!r} must be true or false, got {value!r}")


def _as_number(name: str, value: Any, kind: type, low: float, high: float | None = None) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise JudgeConfigError(f"metadata {name!r} must be a {kind.__name__}, got {value!r}") from None
    if number < low or (high is not None and number > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise JudgeConfigError(f"metadata {name!r} must be {bound}, got {value!r}")
    return number


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

        Metadata keys: ``judge_model``, ``judge_base_url``, ``judge_temperature``, ``judge_max_tokens``,
        ``judge_max_concurrency``, ``judge_timeout``, ``judge_retries``, ``judge_protocol``,
        ``judge_cache``, ``judge_templates``, ``judge_swap``, ``reference_model``,
        ``reference_temperature``, ``reference_max_tokens``.
        """
        meta = dict(metadata or {})
        env = os.environ if environ is None else environ
        forbidden = [key for key in FORBIDDEN_KEYS if key in meta]
        if forbidden:
            raise JudgeConfigError(
                f"{task}: {forbidden[0]!r} was given in the metadata. API keys are read only from the "
                f"environment (${ENV_API_KEY} or ${ENV_OPENAI_API_KEY}) so that they never reach lm-eval's "
                f"results files or logs; remove it from --metadata / --model_args."
            )

        def pick(key: str, env_name: str | None = None) -> Any:
            value = meta.get(key)
            if value in (None, "") and env_name:
                value = env.get(env_name) or None
            return value

        base_url = pick("judge_base_url", ENV_BASE_URL) or env.get(ENV_OPENAI_BASE_URL) or None
        key_env = next((name for name in (ENV_API_KEY, ENV_OPENAI_API_KEY) if env.get(name)), None)
        if base_url is None and key_env is None:
            raise JudgeConfigError(
                f"{task} is scored by an LLM judge, but no judge is configured. Set one of:\n"
                f"  * ${ENV_API_KEY} (or ${ENV_OPENAI_API_KEY}) to judge with OpenAI "
                f"(model ${ENV_MODEL}, default {DEFAULT_OPENAI_JUDGE});\n"
                f"  * ${ENV_BASE_URL} and ${ENV_MODEL} for an OpenAI-compatible server (vLLM, llama.cpp),"
                f' or --metadata \'{{"judge_base_url": "http://host:8000/v1", "judge_model": "name"}}\'.\n'
                f"Nothing was loaded or generated."
            )
        base_url = str(base_url) if base_url else None
        if base_url is not None and (
            urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname
        ):
            raise JudgeConfigError(
                f"{task}: judge base URL must be http(s)://host..., got {redact_url(base_url)!r}"
            )
        model = pick("judge_model", ENV_MODEL)
        if model is None:
            if base_url is not None:
                raise JudgeConfigError(
                    f"{task}: the judge server {redact_url(base_url)} is configured but not the model it "
                    f'serves: set ${ENV_MODEL} or --metadata \'{{"judge_model": "name"}}\'.'
                )
            model = DEFAULT_OPENAI_JUDGE
        # On OpenAI the paper's reference model exists; on a private server the judge model writes them.
        reference_model = pick("reference_model", ENV_REFERENCE_MODEL) or (
            DEFAULT_OPENAI_REFERENCE if base_url is None else model
        )

        templates = pick("judge_templates", ENV_TEMPLATES)
        templates_dir = Path(str(templates)).expanduser() if templates else None
        if templates_dir is not None and not templates_dir.is_dir():
            raise JudgeConfigError(f"{task}: judge templates directory does not exist: {templates_dir}")
        protocol = str(meta.get("judge_protocol") or "llmkick").strip().lower()
        if protocol not in PROTOCOLS:
            raise JudgeConfigError(
                f"{task}: metadata 'judge_protocol' must be one of {', '.join(PROTOCOLS)}, got "
                f"{meta.get('judge_protocol')!r}"
            )
        for removed in ("judge_backoff", "judge_max_backoff"):
            if removed in meta:  # harmless (no score depends on it), but say that it does nothing
                log.warning(
                    "%s: metadata %r is ignored: retries use the openai client's backoff (Retry-After "
                    "honoured); judge_retries sets how many",
                    task,
                    removed,
                )
        cache = pick("judge_cache", ENV_CACHE)
        cache_path = Path(str(cache)).expanduser() if cache else default_cache_path()
        check_cache_file(cache_path, task)

        settings = cls(
            model=str(model),
            base_url=base_url,
            temperature=_as_number("judge_temperature", meta.get("judge_temperature", 0.2), float, 0.0, 2.0),
            max_tokens=_as_number("judge_max_tokens", meta.get("judge_max_tokens", 1024), int, 1),
            sampling_given=frozenset(
                name for name in ("temperature", "max_tokens") if meta.get(f"judge_{name}") not in (None, "")
            ),
            max_concurrency=_as_number(
                "judge_max_concurrency", meta.get("judge_max_concurrency", 16), int, 1
            ),
            timeout=_as_number("judge_timeout", meta.get("judge_timeout", 120.0), float, 0.001),
            retries=_as_number("judge_retries", meta.get("judge_retries", 6), int, 0),
            cache_path=cache_path,
            templates_dir=templates_dir,
            swap=_as_bool("judge_swap", meta.get("judge_swap", False)),
            protocol=protocol,
            reference_model=str(reference_model),
            reference_temperature=_as_number(
                "reference_temperature", meta.get("reference_temperature", 0.0), float, 0.0, 2.0
            ),
            reference_max_tokens=_as_number(
                "reference_max_tokens", meta.get("reference_max_tokens", 1024), int, 1
            ),
            api_key_env=key_env,
            environ=env,
        )
        return settings
