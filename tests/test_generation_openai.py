"""The OpenAI-compatible backend against a small local chat-completions server.

The server lives in ``tests/chat_server.py`` (shared with the long-CoT tests):
it validates each request body, answers with deterministic choices and
log-probs, and can be scripted to fail first, cap ``n``, check the
``Authorization`` header or answer slowly.
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from chat_server import MODEL, ChatServer, server_fixture  # noqa: F401  (the `server` fixture)
from PIL import Image

from mmr1.generation import GenerationBackend, generate, get_backend, openai_compat
from mmr1.generation.openai_compat import (
    RETRY_AFTER_CAP_S,
    ChatCompletionError,
    OpenAIBackend,
    follow_up_seed,
    parse_retry_after,
)
from schemas.generation import GenerationRequest, OpenAIBackendConfig, SamplingParams


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays the backend asked for, without actually sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr(openai_compat, "_sleep", recorded.append)
    return recorded


def _config(base_url: str, **overrides: Any) -> OpenAIBackendConfig:
    settings: dict[str, Any] = {
        "base_url": base_url,
        "model": MODEL,
        "api_key_env": None,
        "timeout_s": 5.0,
        "max_retries": 3,
        "backoff_s": 0.5,
        "concurrency": 4,
    }
    settings.update(overrides)
    return OpenAIBackendConfig(**settings)


def _request(prompt: str = "What is this?", **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, **kwargs)


# -- requests and responses --------------------------------------------------------------


def test_request_body_and_parsed_completion(server: ChatServer) -> None:
    request = GenerationRequest(
        prompt="Compare <image> and <image>.",
        images=[Image.new("RGBA", (8, 6), "red"), Image.new("L", (3, 9), 40)],
        system="Answer briefly.",
        request_id="item-1",
    )
    sampling = SamplingParams(n=3, temperature=0.7, top_p=0.9, max_new_tokens=7, seed=5)
    with OpenAIBackend(_config(server.base_url + "/")) as backend:
        (completion,) = backend.generate([request], sampling)

    (seen,) = server.state.seen
    body = seen["json"]
    assert body["model"] == MODEL
    assert (body["n"], body["max_tokens"], body["seed"], body["logprobs"]) == (3, 7, 5, True)
    assert (body["temperature"], body["top_p"]) == (0.7, 0.9)
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert seen["image_sizes"] == [(8, 6), (3, 9)]
    assert "authorization" not in {k.lower() for k in seen["headers"]}

    assert completion.request_id == "item-1"
    assert completion.prompt_tokens == 18
    texts = [s.text for s in completion.samples]
    assert texts == [f"Compare  and .|seed=5|i={i}" for i in range(3)]
    assert [s.finish_reason for s in completion.samples] == ["stop", "length", "stop"]
    assert all(s.token_ids == [] for s in completion.samples)
    assert completion.samples[0].logprobs == [-0.25, -0.5, -0.75]


def test_logprobs_are_not_requested_when_disabled(server: ChatServer) -> None:
    backend = OpenAIBackend(_config(server.base_url))
    (completion,) = backend.generate([_request()], SamplingParams(return_logprobs=False))
    backend.close()
    assert "logprobs" not in server.state.seen[0]["json"]
    assert completion.samples[0].logprobs is None


def test_capped_n_is_topped_up_with_derived_seeds(server: ChatServer) -> None:
    server.state.cap_n = 2
    with OpenAIBackend(_config(server.base_url)) as backend:
        (completion,) = backend.generate([_request()], SamplingParams(n=5, seed=11))

    bodies = [s["json"] for s in server.state.seen]
    assert [b["n"] for b in bodies] == [5, 3, 1]
    seeds = [b["seed"] for b in bodies]
    assert seeds == [11, follow_up_seed(11, 1), follow_up_seed(11, 2)]
    assert len(set(seeds)) == 3
    assert len(completion.samples) == 5
    assert len({s.text for s in completion.samples}) == 5


def test_empty_batch_makes_no_calls(server: ChatServer) -> None:
    with OpenAIBackend(_config(server.base_url)) as backend:
        assert backend.generate([], SamplingParams()) == []
    assert server.state.seen == []


def test_placeholder_mismatch_fails_before_any_call(server: ChatServer) -> None:
    bad = _request("look at <image>", request_id="r9")
    with OpenAIBackend(_config(server.base_url)) as backend:
        with pytest.raises(ValueError, match=r"'r9'.*1 <image> placeholder\(s\) but 0 image\(s\)"):
            backend.generate([_request(), bad], SamplingParams())
    assert server.state.seen == []


# -- retries -----------------------------------------------------------------------------


def test_retries_429_and_5xx_with_exponential_backoff(
    server: ChatServer, sleeps: list[float]
) -> None:
    server.state.script = [(503, {}, "busy"), (429, {}, "slow down"), (500, {}, "oops")]
    with OpenAIBackend(_config(server.base_url, max_retries=3, backoff_s=0.5)) as backend:
        (completion,) = backend.generate([_request()], SamplingParams())
    assert len(server.state.seen) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert completion.samples[0].text.startswith("What is this?")


def test_retry_after_is_respected_and_capped(server: ChatServer, sleeps: list[float]) -> None:
    server.state.script = [(429, {"Retry-After": "2"}, "{}"), (503, {"Retry-After": "3600"}, "{}")]
    with OpenAIBackend(_config(server.base_url)) as backend:
        backend.generate([_request()], SamplingParams())
    assert sleeps == [2.0, RETRY_AFTER_CAP_S]


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30.0)
    assert parse_retry_after("not a date") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0


def test_gives_up_after_max_retries_with_url_status_and_body(
    server: ChatServer, sleeps: list[float]
) -> None:
    server.state.script = [(503, {}, '{"error": "model overloaded, try later"}')] * 3
    with OpenAIBackend(_config(server.base_url, max_retries=2, backoff_s=0.1)) as backend:
        with pytest.raises(ChatCompletionError) as info:
            backend.generate([_request(request_id="q1")], SamplingParams())
    err = info.value
    assert err.status == 503
    assert err.url == server.base_url + "/chat/completions"
    message = str(err)
    assert server.base_url + "/chat/completions" in message
    assert "HTTP 503" in message and "model overloaded, try later" in message
    assert "3 attempt(s)" in message and "'q1'" in message
    assert sleeps == [0.1, 0.2]


def test_client_error_fails_immediately_with_snippet(
    server: ChatServer, sleeps: list[float]
) -> None:
    long_body = '{"error": "max_tokens is too large"} ' + "x" * 5000
    server.state.script = [(400, {}, long_body)]
    with OpenAIBackend(_config(server.base_url)) as backend:
        with pytest.raises(ChatCompletionError) as info:
            backend.generate([_request()], SamplingParams())
    assert len(server.state.seen) == 1
    assert sleeps == []
    assert info.value.status == 400
    assert "HTTP 400" in str(info.value) and "max_tokens is too large" in str(info.value)
    assert info.value.body_snippet.endswith("...")
    assert len(info.value.body_snippet) < 400


def test_connection_errors_are_retried_then_reported(sleeps: list[float]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with OpenAIBackend(_config(url, max_retries=2, backoff_s=0.05)) as backend:
        with pytest.raises(ChatCompletionError) as info:
            backend.generate([_request()], SamplingParams())
    assert info.value.status is None
    assert "ConnectError" in str(info.value) and "3 attempt(s)" in str(info.value)
    assert url + "/chat/completions" in str(info.value)
    assert sleeps == [0.05, 0.1]


def test_timeouts_are_retried(server: ChatServer, sleeps: list[float]) -> None:
    server.state.slow_first_s = [1.0]
    with OpenAIBackend(_config(server.base_url, timeout_s=0.2)) as backend:
        (completion,) = backend.generate([_request()], SamplingParams())
    assert sleeps == [0.5]
    assert len(completion.samples) == 1


# -- API key -----------------------------------------------------------------------------


def test_key_from_environment_variable(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMR1_TEST_API_KEY", "sk-from-env")
    server.state.expected_key = "sk-from-env"
    with OpenAIBackend(_config(server.base_url, api_key_env="MMR1_TEST_API_KEY")) as backend:
        backend.generate([_request()], SamplingParams())
    assert server.state.seen[0]["headers"]["Authorization"] == "Bearer sk-from-env"


def test_explicit_key_wins_over_environment(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMR1_TEST_API_KEY", "sk-from-env")
    server.state.expected_key = "sk-explicit"
    config = _config(server.base_url, api_key_env="MMR1_TEST_API_KEY")
    with OpenAIBackend(config, api_key="sk-explicit") as backend:
        backend.generate([_request()], SamplingParams())
    assert server.state.seen[0]["headers"]["Authorization"] == "Bearer sk-explicit"


def test_no_key_env_sends_no_authorization(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-be-sent")
    with OpenAIBackend(_config(server.base_url, api_key_env=None)) as backend:
        backend.generate([_request()], SamplingParams())
    assert "authorization" not in {k.lower() for k in server.state.seen[0]["headers"]}


@pytest.mark.parametrize("status", [401, 503])
def test_key_never_appears_in_errors_logs_or_repr(
    server: ChatServer, sleeps: list[float], caplog: pytest.LogCaptureFixture, status: int
) -> None:
    secret = "sk-very-secret-123"
    server.state.expected_key = "some-other-key"
    server.state.wrong_key_status = status  # the body echoes "Bearer sk-very-secret-123"
    caplog.set_level(logging.DEBUG)
    backend = OpenAIBackend(_config(server.base_url, max_retries=1), api_key=secret)
    with pytest.raises(ChatCompletionError) as info:
        backend.generate([_request()], SamplingParams())
    backend.close()

    assert server.state.seen[0]["headers"]["Authorization"] == f"Bearer {secret}"  # it was sent
    assert f"HTTP {status}" in str(info.value) and "invalid credentials" in str(info.value)
    for text in (
        str(info.value),
        repr(info.value),
        info.value.body_snippet,
        repr(backend),
        caplog.text,
    ):
        assert secret not in text
    assert "***" in info.value.body_snippet
    assert "api_key='***'" in repr(backend)
    if status == 503:
        assert "retrying" in caplog.text  # the retry path logged, without the key


# -- concurrency and the registry --------------------------------------------------------


def test_concurrency_keeps_order_and_caps_in_flight(server: ChatServer) -> None:
    server.state.delay_s = 0.05
    requests = [_request(f"q{i}", request_id=f"id{i}") for i in range(16)]
    with OpenAIBackend(_config(server.base_url, concurrency=4)) as backend:
        completions = backend.generate(requests, SamplingParams(n=1))
    assert [c.request_id for c in completions] == [f"id{i}" for i in range(16)]
    assert [c.samples[0].text.split("|")[0] for c in completions] == [f"q{i}" for i in range(16)]
    assert len(server.state.seen) == 16
    assert 2 <= server.state.max_in_flight <= 4


def test_get_backend_and_generate_helper(server: ChatServer) -> None:
    config = _config(server.base_url)
    backend = get_backend(config)
    assert isinstance(backend, OpenAIBackend)
    assert isinstance(backend, GenerationBackend)
    assert backend.name == "openai"
    backend.close()
    (completion,) = generate(config, [_request()], SamplingParams(n=2))
    assert len(completion.samples) == 2


def test_malformed_choices_raise_a_clear_error(server: ChatServer) -> None:
    server.state.script = [
        (
            200,
            {},
            '{"choices": [{"index": 0, "message": {"content": "x"}, '
            '"logprobs": {"content": [{"token": "x"}]}}]}',
        )
    ]
    with OpenAIBackend(_config(server.base_url)) as backend:
        with pytest.raises(ChatCompletionError, match="unexpected shape.*KeyError"):
            backend.generate([_request()], SamplingParams())


def test_key_from_prefect_secret_block(server: ChatServer, prefect_harness) -> None:
    from prefect.blocks.system import Secret

    from tasks.generation import build_backend

    Secret(value="sk-from-block").save("mmr1-test-openai-key", overwrite=True)
    server.state.expected_key = "sk-from-block"
    config = _config(server.base_url, api_key_secret_block="mmr1-test-openai-key")
    backend = build_backend(config)
    try:
        backend.generate([_request()], SamplingParams())
    finally:
        backend.close()
    assert server.state.seen[0]["headers"]["Authorization"] == "Bearer sk-from-block"
    assert "sk-from-block" not in repr(backend)


def test_missing_secret_block_is_named(prefect_harness) -> None:
    from tasks.generation import build_backend

    config = _config("http://127.0.0.1:9/v1", api_key_secret_block="no-such-block")
    with pytest.raises(ValueError, match="no-such-block"):
        build_backend(config)
