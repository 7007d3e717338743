"""Judge settings, cache, client and templates against the local OpenAI-compatible test server."""

from __future__ import annotations

import base64
import logging
import multiprocessing
import re
import sqlite3
import time
import traceback
from pathlib import Path

import pytest
from judge_server import BAD_REPLIES, JudgeServer

from llmkick_tasks.judge.cache import ResponseCache
from llmkick_tasks.judge.client import ChatRequest, JudgeClient, JudgeRequestError
from llmkick_tasks.judge.config import JudgeConfigError, JudgeSettings, redact_text, server_identity
from llmkick_tasks.judge.templates import TemplateError, TemplateSet

SECRET = "sk-llmkick-unit-test-5f3a9c"


def settings_for(server: JudgeServer, tmp_path: Path, **metadata: object) -> JudgeSettings:
    meta = {
        "judge_base_url": server.url,
        "judge_model": "judge-x",
        "judge_cache": str(tmp_path / "cache.sqlite"),
        **metadata,
    }
    return JudgeSettings.from_metadata(meta, environ={"LLMKICK_JUDGE_API_KEY": SECRET})


def requests(n: int, model: str = "judge-x") -> list[ChatRequest]:
    return [
        ChatRequest.build(model, [{"role": "user", "content": f"question {i}"}], 0.2, 64) for i in range(n)
    ]


@pytest.fixture
def server():
    with JudgeServer(reply=lambda body: "reply to " + body["messages"][-1]["content"]) as running:
        yield running


# ---------------------------------------------------------------------------------------------- settings
def test_no_judge_configured_names_what_to_set() -> None:
    with pytest.raises(JudgeConfigError) as error:
        JudgeSettings.from_metadata({}, task="llmkick_x", environ={})
    message = str(error.value)
    assert "llmkick_x" in message
    for name in ("LLMKICK_JUDGE_API_KEY", "OPENAI_API_KEY", "LLMKICK_JUDGE_BASE_URL", "LLMKICK_JUDGE_MODEL"):
        assert name in message


def test_settings_precedence_and_key_only_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OPENAI_API_KEY": SECRET, "LLMKICK_JUDGE_MODEL": "env-model"}
    openai = JudgeSettings.from_metadata({}, environ=env)
    assert (openai.model, openai.base_url, openai.reference_model) == ("env-model", None, "gpt-3.5-turbo")
    assert openai.api_key_env == "OPENAI_API_KEY"
    meta = JudgeSettings.from_metadata({"judge_model": "meta-model", "judge_swap": "true"}, environ=env)
    assert meta.model == "meta-model" and meta.swap is True
    # The key is read when used, and appears in no description of the settings.
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert openai.api_key() == SECRET
    assert SECRET not in repr(openai) and SECRET not in str(openai.describe())
    with pytest.raises(JudgeConfigError, match="only from the environment"):
        JudgeSettings.from_metadata({"judge_api_key": SECRET}, environ=env)


def test_local_server_needs_a_model_but_no_key() -> None:
    with pytest.raises(JudgeConfigError, match="judge_model"):
        JudgeSettings.from_metadata({"judge_base_url": "http://127.0.0.1:1/v1"}, environ={})
    local = JudgeSettings.from_metadata(
        {"judge_base_url": "http://user:pw@127.0.0.1:1/v1", "judge_model": "m"}, environ={}
    )
    assert local.api_key() == "EMPTY" and local.reference_model == "m"
    assert "pw" not in str(local.describe())


@pytest.mark.parametrize(
    "metadata",
    [
        {"judge_temperature": 3},
        {"judge_max_concurrency": 0},
        {"judge_retries": "many"},
        {"judge_swap": "maybe"},
        {"judge_base_url": "ftp://x"},
        {"judge_base_url": "http://"},
        {"judge_templates": "/no/such/dir"},
        {"judge_cache": "/"},
        {"judge_cache": __file__},  # a file that is not a sqlite database
    ],
)
def test_bad_settings_are_refused(metadata: dict) -> None:
    with pytest.raises(JudgeConfigError):
        JudgeSettings.from_metadata({"judge_model": "m", **metadata}, environ={"OPENAI_API_KEY": "k"})


# ---------------------------------------------------------------------------------------------- client
def test_replies_in_order_and_key_sent_as_bearer(server: JudgeServer, tmp_path: Path) -> None:
    client = JudgeClient(settings_for(server, tmp_path))
    results = client.complete_all(requests(5))
    assert [r.text for r in results] == [f"reply to question {i}" for i in range(5)]
    assert {r.headers["authorization"] for r in server.received} == {f"Bearer {SECRET}"}
    assert client.stats.sent == 5 and client.stats.cached == 0


def test_concurrency_is_bounded_and_used(tmp_path: Path) -> None:
    with JudgeServer("8 7", latency=0.05) as server:
        JudgeClient(settings_for(server, tmp_path, judge_max_concurrency=4)).complete_all(requests(24))
        assert server.max_in_flight == 4
        server.reset()
        JudgeClient(settings_for(server, tmp_path, judge_max_concurrency=1)).complete_all(requests(6))
        assert server.max_in_flight == 1


def test_429_and_5xx_bursts_are_retried_and_nothing_is_lost(server: JudgeServer, tmp_path: Path) -> None:
    server.fail_next(429, 5, retry_after=0)
    server.fail_next(500, 2)
    server.fail_next(502, 1)
    server.fail_next(503, 1)
    client = JudgeClient(settings_for(server, tmp_path, judge_retries=10))
    results = client.complete_all(requests(12))
    assert [r.text for r in results] == [f"reply to question {i}" for i in range(12)]
    statuses = [r.status for r in server.received]
    assert statuses.count(429) == 5 and statuses.count(500) == 2 and statuses.count(503) == 1
    assert statuses.count(502) == 1
    assert statuses.count(200) == 12  # each request answered exactly once
    assert client.stats.retries == 9 and client.stats.sent == 12 and client.stats.attempts == 21


def test_removed_backoff_settings_are_ignored_visibly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        JudgeSettings.from_metadata({"judge_model": "m", "judge_backoff": 2}, environ={"OPENAI_API_KEY": "k"})
    assert "'judge_backoff' is ignored" in caplog.text


def test_retry_after_header_is_honoured(server: JudgeServer, tmp_path: Path) -> None:
    server.fail_next(429, 1, retry_after=0.3)
    started = time.monotonic()
    JudgeClient(settings_for(server, tmp_path)).complete_all(requests(1))
    assert time.monotonic() - started >= 0.3


def test_non_retryable_error_fails_at_once_without_the_key(server: JudgeServer, tmp_path: Path) -> None:
    server.fail_next(401, 1)
    with pytest.raises(JudgeRequestError) as error:
        JudgeClient(settings_for(server, tmp_path)).complete_all(requests(1))
    assert "HTTP 401" in str(error.value) and "API key" in str(error.value)
    assert SECRET not in str(error.value)
    assert len(server.received) == 1


def cached_texts(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT response FROM responses")]


@pytest.mark.parametrize("kind", sorted(BAD_REPLIES))
def test_an_invalid_reply_is_asked_again_and_never_cached(
    server: JudgeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """No choices, null / empty content, a content-filter stop, an error object, not JSON: no verdict."""
    server.misbehave(kind, 2)  # the first two replies; a request may get both
    settings = settings_for(server, tmp_path, judge_retries=2)
    with ResponseCache(settings.cache_path) as cache, caplog.at_level(logging.WARNING):
        client = JudgeClient(settings, cache)
        results = client.complete_all(requests(3))
    assert caplog.text.count("sent no usable reply") == 1  # one warning; the summary counts them all
    assert "; 2 invalid replies, 0 unusable cache entries asked again" in client.stats.summary()
    assert [r.text for r in results] == [f"reply to question {i}" for i in range(3)]
    assert [r.bad for r in server.received].count(kind) == 2 and len(server.received) == 5
    assert sorted(cached_texts(settings.cache_path)) == [f"reply to question {i}" for i in range(3)]
    assert client.stats.invalid == 2 and client.stats.sent == 3 and client.stats.retries == 2


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        ("empty_choices", "HTTP 200 with a completion with no choices"),
        ("null_content", "HTTP 200 with a choice without message content (finish_reason 'stop')"),
        (
            "length_empty",
            "HTTP 200 with empty message content (finish_reason 'length': raise judge_max_tokens?)",
        ),
        ("content_filter", "HTTP 200 with a choice stopped by the content filter"),
        ("error_object", "HTTP 200 with an error object instead of a completion (model overloaded, caller"),
        ("not_completion", "HTTP 200 with JSON that is not a chat completion (no 'choices')"),
        ("not_json", "HTTP 200 with a body that is not JSON; body: '<html><body><h1>502 Bad Gateway</h1>"),
        ("broken_json", 'HTTP 200 with a body that is not JSON; body: \'{"id": "chatcmpl-x", "choices'),
    ],
)
def test_a_judge_that_never_answers_fails_naming_it_and_caches_nothing(
    server: JudgeServer, tmp_path: Path, kind: str, what: str
) -> None:
    server.misbehave(kind)  # every reply
    settings = settings_for(server, tmp_path, judge_retries=1)
    with ResponseCache(settings.cache_path) as cache, pytest.raises(JudgeRequestError) as error:
        JudgeClient(settings, cache).complete_all(requests(2))
    message = str(error.value)
    assert "2 of 2 judge requests failed" in message
    assert f"judge 'judge-x' at {server.url} sent no usable reply: {what}" in message
    assert "(gave up after 2 attempts)" in message
    assert len(message) < 1200  # the body is quoted, not dumped (the HTML page is 8 kB)
    assert len(server.received) == 4  # 1 + judge_retries asks per request
    assert cached_texts(settings.cache_path) == []


def test_empty_replies_cached_by_older_versions_are_asked_again(server: JudgeServer, tmp_path: Path) -> None:
    settings = settings_for(server, tmp_path)
    [stale, fresh] = requests(2)
    with ResponseCache(settings.cache_path) as cache:
        # What the old client stored for an empty `choices` list or a null content: an empty text.
        cache.put(stale.cache_key(server_identity(server.url)), "judge-x", stale.payload(), "", None)
        client = JudgeClient(settings, cache)
        results = client.complete_all([stale, fresh])
        assert [r.text for r in results] == ["reply to question 0", "reply to question 1"]
        # both asked (concurrently: in either order), the stale one again instead of replayed
        assert sorted(r.prompt for r in server.received) == ["question 0", "question 1"]
        assert client.stats.stale == 1 and client.stats.cached == 0
        assert sorted(cached_texts(settings.cache_path)) == ["reply to question 0", "reply to question 1"]
        server.reset()
        again = JudgeClient(settings, cache)
        assert [r.cached for r in again.complete_all([stale, fresh])] == [True, True]
        assert server.received == []


URL_PASSWORD = "hunter2-url-pass"


@pytest.mark.parametrize("url_credentials", [False, True])
@pytest.mark.parametrize("failure", ["http_401", "error_object_200"])
def test_server_text_is_redacted_from_errors_and_logs(
    server: JudgeServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    failure: str,
    url_credentials: bool,
) -> None:
    """A server echoing the key (or the URL's password) never gets it into a message, a traceback or a log."""
    if failure == "http_401":
        server.fail_next(
            401,
            message=lambda headers: (
                f"Incorrect API key provided: {headers['authorization']} (key {SECRET}, "
                f"from http://judge:{URL_PASSWORD}@proxy/v1, token sk-someone-elses-key-123)"
            ),
        )
    else:
        server.misbehave("error_object")  # echoes the Authorization header
    url = server.url.replace("//", f"//judge:{URL_PASSWORD}@") if url_credentials else server.url
    settings = settings_for(server, tmp_path, judge_base_url=url, judge_retries=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeRequestError) as error:
        JudgeClient(settings).complete_all(requests(1))
    shown = "".join(traceback.format_exception(error.value)) + caplog.text
    # httpx sends the URL's credentials as Basic auth (instead of the key): their base64 is a secret too.
    scheme = "Basic" if url_credentials else "Bearer"
    assert re.search(rf"(Incorrect API key provided:|caller) {scheme} \*\*\*", shown)
    basic = base64.b64encode(f"judge:{URL_PASSWORD}".encode()).decode()
    for secret in (SECRET, URL_PASSWORD, basic, "sk-someone-elses-key-123", SECRET.removeprefix("sk-")):
        assert secret not in shown
    where = "http://***@127.0.0.1:" if url_credentials else server.url
    assert f"judge 'judge-x' at {where}" in str(error.value)


def test_a_long_error_body_is_cut(server: JudgeServer, tmp_path: Path) -> None:
    server.fail_next(400, message="<p>upstream error page</p>" * 500)
    with pytest.raises(JudgeRequestError) as error:
        JudgeClient(settings_for(server, tmp_path)).complete_all(requests(1))
    assert "HTTP 400: Error code: 400 - <p>upstream error page</p>" in str(error.value)
    assert len(str(error.value)) < 700


def test_redact_text_masks_configured_secrets_and_key_shapes() -> None:
    text = "key abcd1234 Bearer tok.en basic dTpw sk-abcdefgh12 https://u:p@h/v1 sk-short ab"
    assert redact_text(text, ["abcd1234", "ab", None]) == (
        "key *** Bearer *** basic *** sk-*** https://***@h/v1 sk-short ab"  # 2-char secrets: not searched
    )


def test_exhausted_retries_raise_after_caching_the_rest(server: JudgeServer, tmp_path: Path) -> None:
    settings = settings_for(server, tmp_path, judge_retries=2)
    server.fail_matching("question 2", 500)
    with ResponseCache(settings.cache_path) as cache, pytest.raises(JudgeRequestError, match="1 of 4"):
        JudgeClient(settings, cache).complete_all(requests(4))
    assert [r.status for r in server.received].count(500) == 3  # 1 attempt + 2 retries
    with ResponseCache(settings.cache_path) as cache:
        assert len(cache) == 3  # the others were answered and kept
        server.fail_matching("question 2", None)
        server.reset()
        client = JudgeClient(settings, cache)
        client.complete_all(requests(4))
        assert len(server.received) == 1 and client.stats.cached == 3


def test_cache_rerun_sends_nothing_and_key_is_not_stored(server: JudgeServer, tmp_path: Path) -> None:
    settings = settings_for(server, tmp_path)
    with ResponseCache(settings.cache_path) as cache:
        first = JudgeClient(settings, cache).complete_all(requests(6))
        server.reset()
        client = JudgeClient(settings, cache)
        second = client.complete_all(requests(6))
    assert [r.text for r in first] == [r.text for r in second]
    assert all(r.cached for r in second) and len(server.received) == 0
    assert client.stats.cached == 6 and client.stats.sent == 0
    for path in tmp_path.glob("cache.sqlite*"):
        assert SECRET.encode() not in path.read_bytes()
        assert b"127.0.0.1" not in path.read_bytes()


def test_identical_requests_in_flight_share_one_call(tmp_path: Path) -> None:
    with JudgeServer("8 7", latency=0.1) as server:
        same = requests(1) * 5
        results = JudgeClient(settings_for(server, tmp_path)).complete_all(same)
        assert [r.text for r in results] == ["8 7"] * 5
        assert len(server.received) == 1


def test_cache_key_covers_model_messages_and_parameters() -> None:
    base = ChatRequest.build("m", [{"role": "user", "content": "x"}], 0.2, 64)
    assert base.key == ChatRequest.build("m", [{"role": "user", "content": "x"}], 0.2, 64).key
    variants = [
        ChatRequest.build("other", [{"role": "user", "content": "x"}], 0.2, 64),
        ChatRequest.build("m", [{"role": "user", "content": "y"}], 0.2, 64),
        ChatRequest.build("m", [{"role": "system", "content": "x"}], 0.2, 64),
        ChatRequest.build("m", [{"role": "user", "content": "x"}], 0.0, 64),
        ChatRequest.build("m", [{"role": "user", "content": "x"}], 0.2, 65),
    ]
    assert len({base.key, *(v.key for v in variants)}) == 6
    paper = ChatRequest.build("m", [{"role": "user", "content": "x"}], 0.2, 64, protocol="paper")
    assert paper.key != base.key and paper.payload() == base.payload()  # the protocol is not sent
    assert base.cache_key("http://a:1/v1") != base.cache_key("http://b:1/v1") != base.key


def test_server_identity_drops_credentials_and_query() -> None:
    assert server_identity("http://user:pw@Host:8000/v1/?key=s") == "http://host:8000/v1"
    assert server_identity(None) == "https://api.openai.com/v1"


def test_a_second_server_with_the_same_model_name_is_asked_again(tmp_path: Path) -> None:
    """The cache key is the judge's identity: replies of one server are never reused for another."""
    cache_path = tmp_path / "shared.sqlite"
    with JudgeServer("8 7") as first, JudgeServer("3 9") as second, ResponseCache(cache_path) as cache:
        a = JudgeClient(settings_for(first, tmp_path), cache).complete_all(requests(3))
        b = JudgeClient(settings_for(second, tmp_path), cache).complete_all(requests(3))
        assert [r.text for r in a] == ["8 7"] * 3 and [r.text for r in b] == ["3 9"] * 3
        assert len(first.received) == 3 and len(second.received) == 3  # no cross-server reuse
        again = JudgeClient(settings_for(first, tmp_path), cache)
        assert [r.text for r in again.complete_all(requests(3))] == ["8 7"] * 3
        assert len(first.received) == 3 and again.stats.cached == 3  # same URL: from the cache
        # The same server under a URL with credentials is the same judge.
        with_user = settings_for(first, tmp_path, judge_base_url=first.url.replace("//", "//u:p@"))
        assert JudgeClient(with_user, cache).complete_all(requests(1))[0].cached


def _write_rows(path: str, worker: int, count: int) -> None:
    with ResponseCache(path) as cache:
        for i in range(count):
            cache.put(f"key-{worker}-{i}", "m", {"i": i}, f"text {worker} {i}", None)


def test_cache_is_safe_under_concurrent_writer_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_rows, args=(path, w, 100)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 400
    with ResponseCache(path) as cache:
        assert cache.get("key-3-99").text == "text 3 99"
        assert cache.get("missing") is None


# ---------------------------------------------------------------------------------------------- templates
def test_templates_render_builtin_and_user_override(tmp_path: Path) -> None:
    builtin = TemplateSet().messages("instruction_general", question="Q?", answer_1="A1", answer_2="A2")
    assert [m["role"] for m in builtin] == ["system", "user"]
    assert "Q?" in builtin[1]["content"] and "A1" in builtin[1]["content"]
    (tmp_path / "instruction_general.user.jinja").write_text(
        "Q={{ question }} 1={{ answer_1 }} 2={{ answer_2 }}"
    )
    (tmp_path / "instruction_general.system.jinja").write_text("")  # empty: no system message
    override = TemplateSet(tmp_path).messages(
        "instruction_general", question="Q?", answer_1="A1", answer_2="A2"
    )
    assert override == [{"role": "user", "content": "Q=Q? 1=A1 2=A2"}]


def test_templates_are_sandboxed_strict_and_checked(tmp_path: Path) -> None:
    (tmp_path / "escape.user.jinja").write_text("{{ question.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError, match="failed to render"):
        TemplateSet(tmp_path).messages("escape", question="x")
    (tmp_path / "typo.user.jinja").write_text("{{ questoin }}")
    with pytest.raises(TemplateError, match="failed to render"):
        TemplateSet(tmp_path).messages("typo", question="x")
    (tmp_path / "broken.user.jinja").write_text("{% if %}")
    with pytest.raises(TemplateError, match=r"broken\.user\.jinja"):
        TemplateSet(tmp_path).check(["broken"])
    with pytest.raises(TemplateError, match="not found"):
        TemplateSet(tmp_path).check(["no_such_template"])
