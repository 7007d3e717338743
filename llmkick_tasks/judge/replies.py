"""What counts as a judge's reply: a chat completion with text in its first choice, checked before caching.

Anything else (not JSON, an error object, no choices, no or empty content, a refusal, a content-filter stop)
is :class:`InvalidReply`: the client asks again and, if it never gets a usable reply, fails that request.
"""

from __future__ import annotations

import contextlib
import json

EXCERPT_CHARS = 200  # of a server's body, in an error message


class InvalidReply(ValueError):
    """A 2xx reply that is no usable chat completion; the message says what is wrong with it."""


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters (redact it first: a cut could split a secret)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def usable_text(text: str) -> bool:
    """True for a reply text that may be judged: anything but empty or whitespace only."""
    return bool(text.strip())


def read_completion(body: str) -> tuple[str, dict[str, int] | None]:
    """The reply text and token usage of a chat-completion body; :class:`InvalidReply` if it has none.

    Empty or whitespace-only content is invalid too: a judge that wrote nothing gave no verdict (a reasoning
    model that spent ``max_tokens`` thinking, a safety stop), and caching it would make the run count an
    unparsed verdict forever.
    """
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidReply("a body that is not JSON") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if isinstance(data, dict) and "error" in data and not choices:
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise InvalidReply(f"an error object instead of a completion ({message})")
    if not isinstance(data, dict) or "choices" not in data:
        raise InvalidReply("JSON that is not a chat completion (no 'choices')")
    if not isinstance(choices, list) or not choices:
        raise InvalidReply("a completion with no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise InvalidReply("a choice without a message")
    finish = choice.get("finish_reason")
    if finish == "content_filter":  # its text, if any, was cut by the provider's filter
        raise InvalidReply("a choice stopped by the content filter (finish_reason 'content_filter')")
    if message.get("refusal"):
        raise InvalidReply(f"a refusal ({message['refusal']})")
    content = message.get("content")
    if content is None:
        raise InvalidReply(f"a choice without message content (finish_reason {finish!r})")
    if not isinstance(content, str):
        raise InvalidReply(f"message content that is not text ({type(content).__name__})")
    if not usable_text(content):
        hint = ": raise judge_max_tokens?" if finish == "length" else ""
        raise InvalidReply(f"empty message content (finish_reason {finish!r}{hint})")
    usage = data.get("usage")
    tokens = None
    if isinstance(usage, dict):
        with contextlib.suppress(TypeError, ValueError):
            tokens = {
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
            }
    return content, tokens
