"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

Standard library only.  ``POST /v1/chat/completions`` answers with the text chosen by ``reply`` (a string,
or a function of the request body), after ``latency`` seconds.  Scripting:

* :meth:`JudgeServer.fail_next` - the next N requests get an HTTP error (429, 500, ...), optionally with a
  ``Retry-After`` header;
* :meth:`JudgeServer.hold_after` - answer N requests, then keep further ones waiting until
  :meth:`JudgeServer.release` (to kill a client mid-run);
* :meth:`JudgeServer.misbehave` - the next N requests (or all) get a 200 that is no usable chat completion
  (:data:`BAD_REPLIES`: no choices, ``null`` content, an error object, a body that is not JSON, ...);
* :attr:`JudgeServer.received` / :attr:`JudgeServer.answered` - every request seen (body, headers, status).

Run it by hand: ``python tests/judge_server.py --port 8000 --reply '8 7' --latency 0.1``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | Callable[[dict[str, Any]], str]
# The error message of a scripted HTTP error: fixed, or made from the request's headers (to echo the key).
ErrorMessage = str | Callable[[dict[str, str]], str]
# A proxy's error page, long (an error message must quote only the start of it).
HTML_PAGE = (
    b"<html><body><h1>502 Bad Gateway</h1><p>upstream went away</p>" + b"<p>.</p>" * 1000 + b"</body></html>"
)
HOLD_LIMIT_S = 120.0  # a held request is answered with 503 after this long, so nothing hangs forever


@dataclass
class Received:
    """One request as the server saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    status: int
    reply: str | None
    bad: str | None = None  # the BAD_REPLIES kind it got instead of a reply

    @property
    def model(self) -> str:
        """The requested model."""
        return str(self.body.get("model"))

    @property
    def prompt(self) -> str:
        """The content of the last user message."""
        users = [m["content"] for m in self.body.get("messages", []) if m.get("role") == "user"]
        return users[-1] if users else ""


def _completion(body: dict[str, Any], content: str | None, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ],
    }


# A body sent as is: (Content-Type, bytes).
RawBody = tuple[str, bytes]
# 200 replies that carry no verdict: kind -> its body (JSON, or raw), from the request's body and headers.
BAD_REPLIES: dict[str, Callable[[dict[str, Any], dict[str, str]], dict[str, Any] | RawBody]] = {
    "empty_choices": lambda body, headers: {**_completion(body, "x"), "choices": []},
    "null_content": lambda body, headers: _completion(body, None),
    "empty_content": lambda body, headers: _completion(body, ""),
    "length_empty": lambda body, headers: _completion(body, "", finish_reason="length"),
    "content_filter": lambda body, headers: _completion(body, "", finish_reason="content_filter"),
    # A gateway that answers 200 with an error object, echoing the caller's credentials.
    "error_object": lambda body, headers: {
        "error": {
            "message": f"model overloaded, caller {headers.get('authorization')}",
            "type": "server_error",
        }
    },
    "not_completion": lambda body, headers: {"status": "ok", "detail": "the proxy's health page"},
    "not_json": lambda body, headers: ("text/html", HTML_PAGE),
    "broken_json": lambda body, headers: ("application/json", b'{"id": "chatcmpl-x", "choices": [{"mess'),
}


def last_user_message(body: dict[str, Any]) -> str:
    """The content of the last user message of a request body."""
    users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


class JudgeServer:
    """A threaded HTTP server speaking the subset of the OpenAI API the judge uses."""

    def __init__(self, reply: Reply = "8 7", latency: float = 0.0, port: int = 0) -> None:
        self.reply = reply
        self.latency = latency
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._failures: list[tuple[int, float | None, ErrorMessage | None]] = []
        self._bad: list[str] = []
        self._bad_always: str | None = None
        self._failing: dict[str, int] = {}
        self._hold_after: int | None = None
        self._released = threading.Event()
        self._answered = 0
        self._drop_held = False
        self.in_flight = 0
        self.max_in_flight = 0
        self._server = _Server(("127.0.0.1", port), _handler_for(self))
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """Base URL for the openai client (``.../v1``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> JudgeServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (held requests are released)."""
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting
    def fail_next(
        self,
        status: int,
        count: int = 1,
        retry_after: float | None = None,
        message: ErrorMessage | None = None,
    ) -> None:
        """The next ``count`` requests get HTTP ``status``; ``message``: the error body's message."""
        with self._lock:
            self._failures.extend([(status, retry_after, message)] * count)

    def misbehave(self, kind: str | None, count: int | None = None) -> None:
        """The next ``count`` requests (``None``: every one, until ``misbehave(None)``) get ``kind``."""
        if kind is not None and kind not in BAD_REPLIES:
            raise ValueError(f"unknown misbehaviour {kind!r}; one of {', '.join(BAD_REPLIES)}")
        with self._lock:
            if count is None:
                self._bad_always = kind
            elif kind is not None:
                self._bad.extend([kind] * count)

    def fail_matching(self, text: str, status: int | None) -> None:
        """Every request whose last user message contains ``text`` gets ``status`` (``None`` stops it)."""
        with self._lock:
            if status is None:
                self._failing.pop(text, None)
            else:
                self._failing[text] = status

    def hold_after(self, answered: int) -> None:
        """After ``answered`` successful replies, hold further requests until :meth:`release`."""
        with self._lock:
            self._hold_after = answered
            self._drop_held = False
            self._released.clear()

    def release(self, drop: bool = False) -> None:
        """Let held requests proceed; with ``drop`` they are closed unanswered and not recorded."""
        with self._lock:
            self._hold_after = None
            self._drop_held = drop
        self._released.set()

    def reset(self) -> None:
        """Forget the requests seen so far (scripts stay)."""
        with self._lock:
            self.received.clear()
            self._answered = 0
            self.max_in_flight = 0

    @property
    def answered(self) -> list[Received]:
        """Requests answered with 200 and a reply (not a scripted bad one)."""
        with self._lock:
            return [r for r in self.received if r.status == 200 and r.bad is None]

    # ------------------------------------------------------------------ handling
    def _next_failure(self, body: dict[str, Any]) -> tuple[int, float | None, ErrorMessage | None] | None:
        with self._lock:
            prompt = last_user_message(body)
            for text, status in self._failing.items():
                if text in prompt:
                    return status, None, None
            return self._failures.pop(0) if self._failures else None

    def _next_bad(self) -> str | None:
        with self._lock:
            return self._bad.pop(0) if self._bad else self._bad_always

    def _should_hold(self) -> bool:
        with self._lock:
            return self._hold_after is not None and self._answered >= self._hold_after

    def handle(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any] | RawBody, dict[str, str]] | None:
        """Status, JSON body (or a raw one) and extra headers for one request (``None``: close unanswered)."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._handle(body, headers)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handle(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any] | RawBody, dict[str, str]] | None:
        if self.latency:
            time.sleep(self.latency)
        failure = self._next_failure(body)
        if failure is not None:
            status, retry_after, message = failure
            with self._lock:
                self.received.append(Received(body, headers, status, None))
            extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            text = message(headers) if callable(message) else message or f"scripted HTTP {status}"
            error = {"error": {"message": text, "type": "scripted", "code": status}}
            return status, error, extra
        bad = self._next_bad()
        if bad is not None:
            with self._lock:
                self.received.append(Received(body, headers, 200, None, bad))
            return 200, BAD_REPLIES[bad](body, headers), {}
        if self._should_hold():
            if not self._released.wait(HOLD_LIMIT_S):
                return 503, {"error": {"message": "held too long"}}, {}
            if self._drop_held:
                return None
        text = self.reply(body) if callable(self.reply) else self.reply
        with self._lock:
            self._answered += 1
            self.received.append(Received(body, headers, 200, text))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(text.split())
        return (
            200,
            {
                "id": f"chatcmpl-{len(self.received)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
            {},
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog (5) refuses bursts of concurrent connections

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client killed mid-request (the resume test) is expected, not worth a traceback


def _handler_for(server: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections as with a real server
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: dict[str, Any] | RawBody, extra: dict[str, str]) -> None:
            if isinstance(payload, tuple):  # sent as is: a page that is not JSON, a cut-off body
                content_type, data = payload
            else:
                content_type, data = "application/json", json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                return
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "body is not JSON"}}, {})
                return
            answer = server.handle(body, {k.lower(): v for k, v in self.headers.items()})
            if answer is None:
                self.close_connection = True
                return
            self._send(*answer)

    return Handler


def main() -> None:
    """Serve a canned reply until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--reply", default="8 7")
    parser.add_argument("--latency", type=float, default=0.0)
    options = parser.parse_args()
    server = JudgeServer(options.reply, options.latency, options.port).start()
    print(f"serving {server.url} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
