"""One request to an OpenAI-compatible chat endpoint, the response_format fallback, and the
retry policy: the three pieces :class:`hpo.sampler.llm.LLMAnalyst` puts together (with the
ledger, the reply cache and the budget) for one analysis.

* :class:`Endpoint` sends one request with one ``openai`` client (created at the first request,
  kept until :meth:`Endpoint.close`) and says what came back: a :class:`Completion`, or a
  :class:`RequestFailed` with the ledger outcome (``http_429``, ``http_500``, ``http_4xx``,
  ``timeout``, ``connection``, ``error``), the redacted message, the Retry-After and whether
  the endpoint rejected the response_format.
* :class:`ResponseFormats` picks the response_format: hosted APIs take
  ``{"type": "json_schema", ...}``; llama.cpp's server takes ``{"type": "json_object",
  "schema": ...}`` and answers 500 to the other, so ``auto`` tries the first and falls back to
  the second (then to no response_format) when the endpoint rejects it (:func:`rejects_format`).
  The mode that worked is remembered per endpoint for the process.
* :class:`RetryPolicy` says whether a failed request is sent again and after how long: 429,
  other 5xx, timeouts and dropped connections are transient (retried in the same mode, with
  exponential backoff); a transient error never causes (nor is remembered as) a downgrade.

    >>> formats = ResponseFormats("auto", "http://127.0.0.1:8080/v1")
    >>> rejected = RequestFailed("http_500", "HTTP 500: response_format.type ...",
    ...                          format_rejected=True)
    >>> formats.mode, formats.fall_back(rejected), formats.mode
    ('json_schema', True, 'json_object')
    >>> RetryPolicy(max_retries=3, backoff=1.0).delay(1, rejected) is None  # a probe, not a retry
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import openai

from hpo.sampler.settings import LLMConfig

RETRYABLE = ("http_429", "http_500", "timeout", "connection")
MODES = ("json_schema", "json_object", "none")  # the order ``auto`` tries them in
_FORMAT_MEMO: dict[str, str] = {}  # base_url -> the response_format mode that worked
# what an endpoint's error says when it is the response_format it cannot take (llama.cpp: a 500
# with pydantic's "response_format.type: Input should be 'text' or 'json_object'")
_FORMAT_WORDS = ("response_format", "response format", "json_schema", "json schema",
                 "json_object", "schema", "grammar", "structured output", "guided")


def rejects_format(exc: openai.APIStatusError) -> bool:
    """A 4xx/5xx that says the request's response_format is what the endpoint cannot take."""
    if exc.status_code in (401, 403, 404, 408, 409, 429):
        return False
    try:
        body = exc.response.text
    except Exception:  # noqa: BLE001 - a streamed or closed response: use the message
        body = ""
    text = f"{exc.message} {body}".lower()
    return any(w in text for w in _FORMAT_WORDS)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after"))
    except (TypeError, ValueError, AttributeError):
        return None


class RequestFailed(Exception):
    """One request gave no reply: ``outcome`` and ``message`` go to its ledger entry.

    ``retry_after``: the endpoint's Retry-After in seconds, if it sent one;
    ``format_rejected``: the endpoint said it cannot take the request's response_format.
    """

    def __init__(self, outcome: str, message: str, retry_after: float | None = None,
                 format_rejected: bool = False) -> None:
        super().__init__(f"{outcome}: {message}")
        self.outcome, self.message = outcome, message
        self.retry_after, self.format_rejected = retry_after, format_rejected


@dataclass(frozen=True)
class Completion:
    """What the endpoint answered to one request: the reply text and the tokens it counted."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class Endpoint:
    """The chat endpoint of ``cfg``, with one ``openai`` client from the first request on.

    The client is created lazily (no connection is made before a request) and reused for every
    request until :meth:`close`; a request after :meth:`close` opens a new one. The ``openai``
    package does not retry (``max_retries=0``): :class:`RetryPolicy` does.

        >>> endpoint = Endpoint(LLMConfig(base_url="http://127.0.0.1:9/v1", model="m"))
        >>> try:
        ...     endpoint.complete([{"role": "user", "content": "hi"}], None)
        ... except RequestFailed as exc:
        ...     print(exc.outcome, exc.message)
        ... finally:
        ...     endpoint.close()
        connection Connection error.
    """

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        self._client: openai.OpenAI | None = None

    def _key(self) -> str | None:
        return os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None

    @property
    def client(self) -> openai.OpenAI:
        """The ``openai`` client, created at first use (the API key is read then)."""
        if self._client is None:
            self._client = openai.OpenAI(base_url=self.cfg.base_url,
                                         api_key=self._key() or "unused",
                                         timeout=self.cfg.timeout, max_retries=0)
        return self._client

    def close(self) -> None:
        """Close the client and its connections (nothing to do before the first request)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def redact(self, text: str) -> str:
        """``text`` with the API key, if any, replaced by ``***``."""
        key = self._key()
        return text.replace(key, "***") if key else text

    def complete(self, messages: list[dict[str, str]],
                 response_format: dict[str, Any] | None) -> Completion:
        """Send one chat request; :class:`RequestFailed` when no reply comes back."""
        cfg = self.cfg
        kwargs: dict[str, Any] = {}
        if response_format is not None:
            kwargs["response_format"] = response_format
        try:
            resp = self.client.chat.completions.create(
                model=cfg.model, messages=messages, temperature=cfg.temperature,
                max_tokens=cfg.reply_max_tokens, **kwargs)
        except openai.APIStatusError as exc:
            code = exc.status_code
            outcome = "http_429" if code == 429 else "http_500" if code >= 500 else "http_4xx"
            raise RequestFailed(outcome, self.redact(f"HTTP {code}: {str(exc)[:200]}"),
                                _retry_after(exc), rejects_format(exc)) from None
        except openai.APITimeoutError as exc:
            raise RequestFailed("timeout", f"no reply in {cfg.timeout}s ({exc})") from None
        except openai.APIConnectionError as exc:
            raise RequestFailed("connection", self.redact(str(exc))[:200]) from None
        except Exception as exc:  # noqa: BLE001 - the ledger entry must get an outcome
            raise RequestFailed("error", self.redact(f"{type(exc).__name__}: {exc}")[:200]) \
                from None
        usage = resp.usage
        return Completion(
            text=(resp.choices[0].message.content or "") if resp.choices else "",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0)


class ResponseFormats:
    """The response_format modes one analysis tries, in order, and what each endpoint takes.

    ``auto`` starts with the mode that last worked with ``base_url`` in this process (else
    json_schema), then tries the others in :data:`MODES` order; a fixed mode is the only one.

        >>> formats = ResponseFormats("json_object", "http://127.0.0.1:8080/v1")
        >>> formats.payload({"type": "object"})
        {'type': 'json_object', 'schema': {'type': 'object'}}
        >>> formats.fall_back(RequestFailed("http_4xx", "HTTP 400", format_rejected=True))
        False
    """

    def __init__(self, setting: str, base_url: str) -> None:
        self.base_url = base_url
        self._modes = [setting] if setting != "auto" else \
            list(dict.fromkeys([_FORMAT_MEMO.get(base_url, "json_schema"), *MODES]))
        self.mode = self._modes.pop(0)

    def fall_back(self, failure: RequestFailed) -> bool:
        """Move to the next mode when ``failure`` says the endpoint cannot take this one."""
        if not failure.format_rejected or not self._modes:
            return False
        self.mode = self._modes.pop(0)
        return True

    def remember(self) -> None:
        """The current mode worked: the next analysis against this endpoint starts with it."""
        _FORMAT_MEMO[self.base_url] = self.mode

    def payload(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        """The request's ``response_format`` in the current mode (None: send none)."""
        if self.mode == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": "analysis", "schema": schema, "strict": False}}
        if self.mode == "json_object":
            return {"type": "json_object", "schema": schema}
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Whether a failed request is sent again, and after how many seconds.

    A transient failure (:data:`RETRYABLE`) is retried ``max_retries`` times at most: after
    the endpoint's Retry-After (30 s at most) if it sent one, else after ``backoff`` seconds,
    doubled each time. Anything else is final, and so is a response_format the endpoint
    rejected (:class:`ResponseFormats` falls back before the policy is asked).

        >>> policy = RetryPolicy(max_retries=2, backoff=0.5)
        >>> [policy.delay(attempt, RequestFailed("http_500", "HTTP 503")) for attempt in (1, 2, 3)]
        [0.5, 1.0, None]
        >>> policy.delay(1, RequestFailed("http_429", "HTTP 429", retry_after=120.0))
        30.0
        >>> policy.delay(1, RequestFailed("http_4xx", "HTTP 401")) is None
        True
    """

    max_retries: int
    backoff: float

    def delay(self, attempt: int, failure: RequestFailed) -> float | None:
        """Seconds to wait before retrying after attempt ``attempt`` (1, 2, ...) failed with
        ``failure``; None when it is not retried."""
        if failure.format_rejected or failure.outcome not in RETRYABLE \
                or attempt > self.max_retries:
            return None
        retry_after = failure.retry_after
        return min(retry_after, 30.0) if retry_after else self.backoff * 2 ** (attempt - 1)
