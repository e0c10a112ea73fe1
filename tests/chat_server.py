"""A small local OpenAI-compatible chat-completions server for tests.

The server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1, port 0) validates each
request body (model, messages, PNG data URLs, n, max_tokens, ...), answers with
deterministic choices and log-probs, and can be scripted to fail first, cap
``n``, check the ``Authorization`` header or answer slowly. ``ServerState.respond``
lets a test decide the reply itself (e.g. a teacher that answers per question).

Test modules import ``server_fixture`` (the ``server`` fixture) from here (a plain helper module,
not a conftest, so only the tests that use it pay for it).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

#: What ``ServerState.respond`` returns: None (default reply), the contents of
#: the choices to send, or a full ``(status, headers, body)`` reply.
Reply = list[str] | tuple[int, dict[str, str], str] | None

MODEL = "tiny-vlm"
FINISH_REASONS = ("stop", "length", "content_filter")


# -- the fake server -------------------------------------------------------------------


@dataclass
class ServerState:
    """What the fake server does and what it saw."""

    cap_n: int | None = None
    expected_key: str | None = None
    wrong_key_status: int = 401
    delay_s: float = 0.0
    slow_first_s: list[float] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    #: ``respond(user_text, body) -> Reply``, called (outside the lock) for valid requests.
    respond: Callable[[str, dict[str, Any]], Reply] | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _validate(body: dict[str, Any]) -> tuple[str, list[tuple[int, int]]]:
    """Check the request like a strict server would; return user text and image sizes."""
    assert body["model"] == MODEL, body["model"]
    assert isinstance(body["n"], int) and body["n"] >= 1
    assert isinstance(body["max_tokens"], int) and body["max_tokens"] >= 1
    assert 0.0 <= body["temperature"] and 0.0 < body["top_p"] <= 1.0
    assert isinstance(body["seed"], int)
    messages = body["messages"]
    assert messages[-1]["role"] == "user"
    if len(messages) == 2:
        assert messages[0]["role"] == "system" and isinstance(messages[0]["content"], str)
    texts, sizes = [], []
    for part in messages[-1]["content"]:
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            assert part["type"] == "image_url", part
            header, payload = part["image_url"]["url"].split(",", 1)
            assert header == "data:image/png;base64", header
            image = Image.open(io.BytesIO(base64.b64decode(payload)))
            assert image.format == "PNG"
            sizes.append(image.size)
    return "".join(texts), sizes


def _choices(
    text: str, body: dict[str, Any], count: int, contents: list[str] | None = None
) -> list[dict[str, Any]]:
    choices = []
    for i in range(count):
        content = contents[i] if contents is not None else f"{text}|seed={body['seed']}|i={i}"
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": content},
            "finish_reason": FINISH_REASONS[i % 3],
        }
        if body.get("logprobs"):
            tokens = content.split("|")
            choice["logprobs"] = {
                "content": [
                    {
                        "token": t,
                        "logprob": -0.25 * (j + 1),
                        "bytes": list(t.encode()),
                        "top_logprobs": [],
                    }
                    for j, t in enumerate(tokens)
                ]
            }
        choices.append(choice)
    return choices


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": f"no route {self.path}"})
            return
        body = json.loads(raw)
        with state.lock:
            state.seen.append({"json": body, "headers": dict(self.headers)})
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            scripted = state.script.pop(0) if state.script else None
            slow = state.slow_first_s.pop(0) if state.slow_first_s else 0.0
        try:
            time.sleep(state.delay_s + slow)
            if scripted is not None:
                status, headers, text = scripted
                self._send(status, text, headers)
                return
            auth = self.headers.get("Authorization")
            if state.expected_key is not None and auth != f"Bearer {state.expected_key}":
                # Like a careless server, echo what it received.
                self._send(state.wrong_key_status, {"error": f"invalid credentials: {auth}"})
                return
            try:
                text, sizes = _validate(body)
            except (AssertionError, KeyError, TypeError, ValueError) as exc:
                self._send(422, {"error": f"invalid request: {exc!r}"})
                return
            state.seen[-1]["image_sizes"] = sizes
            reply = state.respond(text, body) if state.respond is not None else None
            if isinstance(reply, tuple):
                status, headers, payload = reply
                self._send(status, payload, headers)
                return
            count = min(body["n"], state.cap_n or body["n"])
            if reply is not None:
                count = min(count, len(reply))
            self._send(
                200,
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": MODEL,
                    "choices": _choices(text, body, count, reply),
                    "usage": {"prompt_tokens": 10 + 4 * len(sizes), "completion_tokens": 3},
                },
            )
        finally:
            with state.lock:
                state.in_flight -= 1


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.state = ServerState()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out leaves a broken pipe behind; expected in tests


@pytest.fixture(name="server")
def server_fixture() -> Iterator[ChatServer]:
    """A running ChatServer (import ``server_fixture`` to make ``server`` available)."""
    srv = ChatServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)
