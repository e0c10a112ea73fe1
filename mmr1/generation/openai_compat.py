"""Generation through any OpenAI-compatible chat-completions endpoint.

Works with ``vllm serve`` (the way Prefect tasks reach vLLM, which cannot live
in the orchestration environment: see docs/STACK.md) and with hosted APIs. One
``POST {base_url}/chat/completions`` per request, up to ``config.concurrency``
in flight, retried with exponential backoff on 429, 5xx, timeouts and
connection errors.

What the chat API does and does not give back:

- **Token ids**: not returned by the chat-completions protocol, so
  ``CompletionSample.token_ids`` is always empty here. Callers that need ids
  (GRPO re-scoring) re-tokenize the text with the policy's tokenizer.
- **Log-probs**: with ``sampling.return_logprobs`` the request sets
  ``"logprobs": true`` and the per-token values come from
  ``choices[i].logprobs.content[j].logprob``. Our convention (docs/METHOD.md 7) is
  log-probs of the temperature-scaled distribution; ``vllm serve`` returns raw
  (unscaled) log-probs unless started with ``--logprobs-mode processed_logprobs``,
  and hosted APIs return whatever they return. An endpoint that ignores the flag
  yields ``logprobs=None`` (logged once), not an error, so evaluation against
  APIs without log-prob support still works.
- **Reasoning**: do not start ``vllm serve`` with ``--reasoning-parser``: it moves
  the ``<think>`` part into ``reasoning_content`` and ``content`` alone would lack it.
- **n**: some servers cap ``n``; missing samples are requested again with
  derived seeds (:func:`follow_up_seed`) until ``n`` are collected.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import SecretStr

from mmr1.generation.messages import to_openai_messages
from mmr1.prompts import split_prompt
from schemas.generation import (
    Completion,
    CompletionSample,
    GenerationRequest,
    OpenAIBackendConfig,
    SamplingParams,
)

logger = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 60.0
"""Longest wait honoured from a ``Retry-After`` header (a server may ask for hours)."""

MAX_BACKOFF_S = 60.0
"""Upper bound of the exponential backoff between two attempts."""

BODY_SNIPPET_CHARS = 300
"""How much of an error response body is quoted in exceptions."""

# Indirection so tests can record backoff delays instead of sleeping.
_sleep = time.sleep


class ChatCompletionError(RuntimeError):
    """A chat-completions call failed for good (after retries, or on a non-retryable status).

    Attributes: ``url``, ``status`` (``None`` for connection errors and timeouts)
    and ``body_snippet`` (start of the response body, API key redacted).
    """

    def __init__(self, message: str, *, url: str, status: int | None, body_snippet: str) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body_snippet = body_snippet


def follow_up_seed(seed: int, round_index: int) -> int:
    """Seed of the ``round_index``-th request for one prompt (round 0 uses ``seed`` itself).

    Hashed rather than ``seed + round_index``: vLLM seeds the ``i``-th of ``n``
    samples with ``seed + i``, so consecutive seeds would repeat samples.
    """
    if round_index == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), capped.

    Returns ``None`` when the header is absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def backoff_delay(backoff_s: float, attempt: int) -> float:
    """Wait before retry ``attempt + 1``: ``backoff_s * 2**attempt``, capped at MAX_BACKOFF_S."""
    return min(backoff_s * (2.0**attempt), MAX_BACKOFF_S)


def _is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _finish_reason(value: Any) -> str:
    # Our schema knows only "stop" and "length"; "content_filter", "tool_calls",
    # "abort", None ... all mean the sample ended for a reason other than the budget.
    return "length" if value == "length" else "stop"


def parse_choice(choice: dict[str, Any], want_logprobs: bool) -> CompletionSample:
    """One ``choices[i]`` object -> :class:`CompletionSample` (``token_ids`` stays empty)."""
    message = choice.get("message") or {}
    text = message.get("content") or ""
    logprobs: list[float] | None = None
    if want_logprobs:
        block = choice.get("logprobs")
        content = block.get("content") if isinstance(block, dict) else None
        if content is not None:
            logprobs = [float(item["logprob"]) for item in content]
    return CompletionSample(
        text=text,
        token_ids=[],
        logprobs=logprobs,
        finish_reason=_finish_reason(choice.get("finish_reason")),
    )


class OpenAIBackend:
    """Sample completions from an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        config: endpoint, model name, timeout, retry and concurrency settings.
        api_key: the API key. When given it wins; otherwise the environment
            variable named by ``config.api_key_env`` is read (``None``: send no
            ``Authorization`` header). The orchestration layer resolves a Prefect
            Secret block and passes its value here; ``mmr1/`` never imports
            Prefect. The key is kept out of logs, exceptions and ``repr``.

    Results come back in request order; each request's ``n`` samples in choice order.
    """

    name = "openai"

    def __init__(self, config: OpenAIBackendConfig, *, api_key: str | None = None) -> None:
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        if api_key is None and config.api_key_env is not None:
            api_key = os.environ.get(config.api_key_env)
        self._api_key = SecretStr(api_key) if api_key else None
        headers = {"Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(
                max_connections=config.concurrency, max_keepalive_connections=config.concurrency
            ),
        )
        self._warned_missing_logprobs = False

    def __repr__(self) -> str:
        key = "'***'" if self._api_key is not None else "None"
        return (
            f"OpenAIBackend(url={self.url!r}, model={self.config.model!r}, "
            f"concurrency={self.config.concurrency}, api_key={key})"
        )

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingParams
    ) -> list[Completion]:
        """Sample ``sampling.n`` completions per request, up to ``config.concurrency`` at once."""
        requests = list(requests)
        # Placeholder/image mismatches fail here, before any network traffic.
        for request in requests:
            try:
                split_prompt(request.prompt, len(request.images))
            except ValueError as exc:
                raise ValueError(f"request {request.request_id!r}: {exc}") from None
        if not requests:
            return []
        workers = min(self.config.concurrency, len(requests))
        if workers == 1:
            return [self._complete(i, r, sampling) for i, r in enumerate(requests)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmr1-openai") as pool:
            futures = [pool.submit(self._complete, i, r, sampling) for i, r in enumerate(requests)]
            try:
                return [future.result() for future in futures]
            except BaseException:
                # Do not start requests that have not begun; running ones finish on their own.
                for future in futures:
                    future.cancel()
                raise

    # -- one request ---------------------------------------------------------------

    def _complete(
        self, index: int, request: GenerationRequest, sampling: SamplingParams
    ) -> Completion:
        label = f"request {index}" + (f" ({request.request_id!r})" if request.request_id else "")
        messages = to_openai_messages(request)
        samples: list[CompletionSample] = []
        prompt_tokens: int | None = None
        round_index = 0
        while len(samples) < sampling.n:
            wanted = sampling.n - len(samples)
            body = self._payload(
                messages, sampling, n=wanted, seed=follow_up_seed(sampling.seed, round_index)
            )
            data = self._post(body, label)
            choices = data.get("choices") if isinstance(data, dict) else None
            if not choices:
                raise ChatCompletionError(
                    f"{label}: POST {self.url} returned no choices",
                    url=self.url,
                    status=200,
                    body_snippet=self._snippet(str(data)),
                )
            try:
                choices = sorted(choices, key=lambda c: c.get("index", 0))
                samples.extend(parse_choice(c, sampling.return_logprobs) for c in choices[:wanted])
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise ChatCompletionError(
                    f"{label}: POST {self.url} returned choices of an unexpected shape "
                    f"({type(exc).__name__}: {exc})",
                    url=self.url,
                    status=200,
                    body_snippet=self._snippet(str(data)),
                ) from None
            if prompt_tokens is None:
                usage = data.get("usage") or {}
                prompt_tokens = usage.get("prompt_tokens")
            round_index += 1
        if sampling.return_logprobs and any(s.logprobs is None for s in samples):
            self._warn_missing_logprobs()
        return Completion(
            request_id=request.request_id, samples=samples, prompt_tokens=prompt_tokens
        )

    def _payload(
        self, messages: list[dict[str, Any]], sampling: SamplingParams, *, n: int, seed: int
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "seed": seed,
        }
        if sampling.return_logprobs:
            body["logprobs"] = True
        return body

    def _post(self, body: dict[str, Any], label: str) -> Any:
        """POST with retries; returns the decoded JSON body of a 2xx response."""
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = self._client.post(self.url, json=body)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                status: int | None = None
                problem = f"{type(exc).__name__}: {self._redact(str(exc)) or 'no detail'}"
                snippet = ""
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        return response.json()
                    except ValueError:
                        snippet = self._snippet(response.text)
                        raise ChatCompletionError(
                            f"{label}: POST {self.url} -> HTTP {status} with a body that is "
                            f"not JSON: {snippet}",
                            url=self.url,
                            status=status,
                            body_snippet=snippet,
                        ) from None
                snippet = self._snippet(response.text)
                problem = f"HTTP {status}: {snippet}"
                if not _is_retryable(status):
                    raise ChatCompletionError(
                        f"{label}: POST {self.url} -> {problem}",
                        url=self.url,
                        status=status,
                        body_snippet=snippet,
                    )
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt + 1 == attempts:
                raise ChatCompletionError(
                    f"{label}: POST {self.url} failed after {attempts} attempt(s); "
                    f"last error: {problem}",
                    url=self.url,
                    status=status,
                    body_snippet=snippet,
                )
            delay = (
                retry_after
                if retry_after is not None
                else backoff_delay(self.config.backoff_s, attempt)
            )
            logger.warning(
                "%s: POST %s attempt %d/%d failed (%s); retrying in %.2f s",
                label,
                self.url,
                attempt + 1,
                attempts,
                problem,
                delay,
            )
            _sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- helpers -------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        if self._api_key is not None:
            secret = self._api_key.get_secret_value()
            text = text.replace(secret, "***")
        return text

    def _snippet(self, text: str) -> str:
        flat = " ".join(self._redact(text).split())
        if len(flat) > BODY_SNIPPET_CHARS:
            flat = flat[:BODY_SNIPPET_CHARS] + "..."
        return flat or "<empty body>"

    def _warn_missing_logprobs(self) -> None:
        if not self._warned_missing_logprobs:
            self._warned_missing_logprobs = True
            logger.warning(
                "%s returned no logprobs although they were requested; samples carry "
                'logprobs=None (does the endpoint support "logprobs": true?)',
                self.url,
            )
