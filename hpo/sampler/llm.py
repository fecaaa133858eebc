"""The LLM analyst: any OpenAI-compatible chat endpoint through the ``openai`` package.

One :meth:`LLMAnalyst.analyse` call: build the prompt, replay a cached reply when the storage
has one for the same prompt hash, else check the study's budget (calls and tokens) and call the
endpoint with a JSON schema as ``response_format``, retrying with exponential backoff on
429/5xx/timeouts. Hosted APIs take ``{"type": "json_schema", ...}``; llama.cpp's server takes
``{"type": "json_object", "schema": ...}`` and answers 500 to the other, so ``auto`` tries the
first and falls back to the second (then to no response_format) when the endpoint rejects it:
a 4xx or 5xx whose body is about the response format. Any other 5xx (and 429, timeouts,
dropped connections) is transient: the same request is retried with backoff, and a downgrade
is never caused (nor remembered) by it. The mode that worked is remembered per endpoint for
the process. The reply is parsed tolerantly (code fences, markup, trailing commas) and
validated. Every request is a ledger entry, written when the request is sent (outcome
``sent``: it counts against ``max_calls`` from that moment) and rewritten in place with its
outcome when known; a run that stops waiting for it marks it ``abandoned``
(:class:`InFlight`). Any failure raises :class:`LLMFailure` and the
sampler lets the rules analyst take over. The API key is read from the environment variable
named in the config and is never written anywhere; when that variable is missing or empty
and the endpoint is not on this machine, no request is made: the ledger says which variable
to set (outcome ``no_api_key``) and the rules analyst takes over.

    >>> parse_reply('Sure! ```json\\n{"summary": "ok", "proposals": [{"params": {"x": 1},}]}\\n```')
    {'summary': 'ok', 'proposals': [{'params': {'x': 1}}]}
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import openai

from hpo.sampler.analysis import Reply, parse_reply_leniently, reply_schema
from hpo.sampler.history import History
from hpo.sampler.ledger import Ledger, prompt_hash, totals
from hpo.sampler.prompt import build_messages
from hpo.sampler.settings import LLMConfig

log = logging.getLogger("hpo.sampler")
RETRYABLE = ("http_429", "http_500", "timeout", "connection")
_FORMAT_MEMO: dict[str, str] = {}  # base_url -> the response_format mode that worked
# what an endpoint's error says when it is the response_format it cannot take (llama.cpp: a 500
# with pydantic's "response_format.type: Input should be 'text' or 'json_object'")
_FORMAT_WORDS = ("response_format", "response format", "json_schema", "json schema",
                 "json_object", "schema", "grammar", "structured output", "guided")


def is_local(url: str) -> bool:
    """Whether ``url`` points at this machine (a local server needs no API key).

    >>> is_local("http://127.0.0.1:8080/v1"), is_local("https://api.openai.com/v1")
    (True, False)
    """
    host = (urlparse(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class LLMFailure(Exception):
    """The LLM gave no usable analysis; ``outcome`` is the last ledger outcome."""

    def __init__(self, outcome: str, message: str, ledger_ids: list[str]) -> None:
        super().__init__(f"{outcome}: {message}")
        self.outcome, self.ledger_ids = outcome, ledger_ids


class InFlight:
    """The requests of this process that were sent and whose outcome is not recorded yet.

    A run that stops waiting for its analyses calls :meth:`abandon`: each such request's
    ledger entry becomes ``abandoned`` (it was sent, and may be paid, but its reply will not be
    read), and no new request is sent afterwards.

        >>> flights = InFlight()
        >>> flights.abandon()
        []
        >>> flights.closed
        True
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self._calls: dict[str, tuple[Ledger, float]] = {}

    def add(self, key: str, ledger: Ledger) -> None:
        self._calls[key] = (ledger, time.perf_counter())  # (callers hold self.lock)

    def settle(self, key: str) -> bool:
        """Whether the outcome of ``key`` is still this process's to record (not abandoned)."""
        with self.lock:
            return self._calls.pop(key, None) is not None

    def abandon(self, reason: str = "the run stopped waiting") -> list[str]:
        """Mark every request in flight ``abandoned`` in its ledger; returns their ledger ids."""
        with self.lock:
            self.closed = True
            calls, self._calls = self._calls, {}
            for key, (ledger, started) in calls.items():
                ledger.update(key, outcome="abandoned", error=(
                    f"{reason}: the request was sent (it may be paid) and its reply was "
                    "never read"), latency_s=round(time.perf_counter() - started, 3))
        return list(calls)


class DryRunLedger(Ledger):
    """Reads a study's ledger and reply cache and writes nothing to it (``hpo analyze
    --dry-run``): entries and replies of this process are kept in memory only, so the budget
    still counts what the study spent."""

    def __init__(self, study: Any) -> None:
        super().__init__(study)
        self._entries: dict[str, dict[str, Any]] = {}
        self._replies: dict[str, dict[str, Any]] = {}

    def record(self, **entry: Any) -> str:
        key = f"dry-run-{len(self._entries) + 1}"
        self._entries[key] = {"prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0,
                              "cost": 0.0, **entry}
        return key

    def update(self, key: str, **fields: Any) -> None:
        self._entries[key].update(fields)

    def entries(self) -> list[dict[str, Any]]:
        return super().entries() + [{"id": k, **v} for k, v in self._entries.items()]

    def totals(self) -> Any:
        return totals(self.entries())

    def cached(self, key: str) -> dict[str, Any] | None:
        return self._replies.get(key) or super().cached(key)

    def store(self, key: str, reply: str, model: str, prompt_tokens: int,
              completion_tokens: int) -> None:
        self._replies[key] = {"model": model, "reply": reply}


class InvalidReply(ValueError):
    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def parse_reply(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``, tolerating fences, markup and trailing commas."""
    if not text or not text.strip():
        raise InvalidReply("invalid_json", "empty reply")
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL)
    start = text.find("{")
    if start < 0:
        raise InvalidReply("invalid_json", "no JSON object in the reply")
    candidates = [text[start: end + 1] for end in _closing_braces(text, start)]
    candidates.append(text[start: text.rfind("}") + 1])
    for blob in candidates:
        for fix in (lambda s: s, _repair):
            try:
                obj = json.loads(fix(blob), strict=False)  # a raw newline inside a string is ok
            except (json.JSONDecodeError, ValueError):
                continue
            if isinstance(obj, dict):
                return obj
    raise InvalidReply("invalid_json", f"unparsable JSON: {text[start:start + 80]!r}...")


def _closing_braces(text: str, start: int) -> list[int]:
    """Where the object opened at ``start`` closes (string-aware), if it does."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            esc, in_str = (not esc and c == "\\"), (in_str and not (c == '"' and not esc))
            continue
        if c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return [i]
    return []


def _repair(s: str) -> str:
    s = re.sub(r",\s*([}\]])", r"\1", s)
    s = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", s)))
    return s


def validate_reply(obj: dict[str, Any]) -> Reply:
    # -- schema errors and partial replies: hpo.sampler.analysis.parse_reply_leniently (the
    # message names each field path, what was expected and what came; malformed prose parts
    # are left out and listed in reply.dropped, valid proposals kept) --
    try:
        reply, dropped = parse_reply_leniently(obj)
    except (ValueError, TypeError) as exc:  # ReplySchemaError (a ValueError)
        raise InvalidReply("invalid_schema", str(exc)) from None
    if dropped:
        log.warning("LLM reply: malformed parts left out: %s", "; ".join(dropped))
    # -- end --
    if not reply.proposals:
        raise InvalidReply("invalid_schema", "the reply has no proposals")
    return reply


class LLMAnalyst:
    """Writes analyses with an OpenAI-compatible endpoint; every call goes to the ledger."""

    name = "llm"

    def __init__(self, cfg: LLMConfig, ledger: Ledger, max_proposals: int = 3,
                 sleep: Callable[[float], None] = time.sleep,
                 in_flight: InFlight | None = None) -> None:
        self.cfg, self.ledger, self.max_proposals, self.sleep = cfg, ledger, max_proposals, sleep
        self.in_flight = in_flight or InFlight()

    def _send(self, base: dict[str, Any], attempt: int, mode: str, ids: list[str]) -> str:
        """Record the request as ``sent`` (it counts against the budget from now on); refuse
        when the run has stopped waiting for analyses."""
        with self.in_flight.lock:
            if self.in_flight.closed:
                raise LLMFailure("abandoned", "the run stopped waiting for analyses; no "
                                 "request sent", ids)
            key = self.ledger.record(outcome="sent", attempt=attempt, response_format=mode,
                                     **base)
            self.in_flight.add(key, self.ledger)
        ids.append(key)
        return key

    def _settle(self, key: str, ids: list[str], **fields: Any) -> None:
        """Rewrite the ``sent`` entry ``key`` with its outcome; LLMFailure when the run
        abandoned it meanwhile (the ledger already says so)."""
        if not self.in_flight.settle(key):
            raise LLMFailure("abandoned", "the run stopped waiting for this reply", ids)
        self.ledger.update(key, **fields)

    def _client(self) -> openai.OpenAI:
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        return openai.OpenAI(base_url=self.cfg.base_url, api_key=key or "unused",
                             timeout=self.cfg.timeout, max_retries=0)

    def _format(self, mode: str, schema: dict[str, Any]) -> dict[str, Any] | None:
        if mode == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": "analysis", "schema": schema, "strict": False}}
        if mode == "json_object":
            return {"type": "json_object", "schema": schema}
        return None

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        return text.replace(key, "***") if key else text

    def analyse(self, h: History, analysis_id: str = "", description: str = "") -> tuple[Reply, list[str]]:
        """A validated reply and the ledger ids of the calls made; raises :class:`LLMFailure`."""
        cfg, ids = self.cfg, []
        messages = build_messages(h, self.max_proposals, description)
        schema = reply_schema(h.space, self.max_proposals, cfg.reply_text_chars)
        key = prompt_hash(cfg.model, messages, schema)
        base = {"model": cfg.model, "prompt_hash": key[:16], "analysis": analysis_id}
        hit = self.ledger.cached(key)
        if hit is not None:
            ids.append(self.ledger.record(outcome="cache_hit", **base))
            return validate_reply(parse_reply(hit["reply"])), ids
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env, "").strip() \
                and not is_local(cfg.base_url):
            message = (f"the environment variable {cfg.api_key_env} (api_key_env) is not set or "
                       f"empty, and {urlparse(cfg.base_url).hostname} is not on this machine: "
                       f"set {cfg.api_key_env} to the endpoint's API key")
            log.warning("LLM analyst: %s; the rules analyst takes over", message)
            ids.append(self.ledger.record(outcome="no_api_key", error=message, **base))
            raise LLMFailure("no_api_key", message, ids)
        modes = [cfg.response_format] if cfg.response_format != "auto" else \
            list(dict.fromkeys([_FORMAT_MEMO.get(cfg.base_url, "json_schema"), "json_schema",
                                "json_object", "none"]))
        mode = modes.pop(0)
        attempt, outcome, message = 0, "error", ""
        while attempt <= cfg.max_retries:
            used = self.ledger.usage()
            if used["calls"] >= cfg.max_calls or used["tokens"] >= cfg.max_tokens:
                ids.append(self.ledger.record(outcome="budget", **base, error=(
                    f"budget spent: {used['calls']}/{cfg.max_calls} calls, "
                    f"{used['tokens']}/{cfg.max_tokens} tokens")))
                raise LLMFailure("budget", "the study's LLM budget is spent", ids)
            attempt += 1
            sent = self._send(base, attempt, mode, ids)
            started = time.perf_counter()
            try:
                kwargs: dict[str, Any] = {}
                fmt = self._format(mode, schema)
                if fmt is not None:
                    kwargs["response_format"] = fmt
                resp = self._client().chat.completions.create(
                    model=cfg.model, messages=messages, temperature=cfg.temperature,
                    max_tokens=cfg.reply_max_tokens, **kwargs)
            except openai.APIStatusError as exc:
                code = exc.status_code
                outcome = "http_429" if code == 429 else "http_500" if code >= 500 else "http_4xx"
                message = self._redact(f"HTTP {code}: {str(exc)[:200]}")
                retry_after, rejected = _retry_after(exc), rejects_format(exc)
            except openai.APITimeoutError as exc:
                outcome, message = "timeout", f"no reply in {cfg.timeout}s ({exc})"
                retry_after, rejected = None, False
            except openai.APIConnectionError as exc:
                outcome, message = "connection", self._redact(str(exc))[:200]
                retry_after, rejected = None, False
            except Exception as exc:  # noqa: BLE001 - the entry must get an outcome
                outcome = "error"
                message = self._redact(f"{type(exc).__name__}: {exc}")[:200]
                retry_after, rejected = None, False
            else:
                latency = time.perf_counter() - started
                usage = resp.usage
                pt = getattr(usage, "prompt_tokens", 0) or 0
                ct = getattr(usage, "completion_tokens", 0) or 0
                text = (resp.choices[0].message.content or "") if resp.choices else ""
                cost = self._cost(pt, ct)
                entry = {"latency_s": round(latency, 3), "prompt_tokens": pt,
                         "completion_tokens": ct, "cost": cost}
                try:
                    reply = validate_reply(parse_reply(text))
                except InvalidReply as exc:
                    self._settle(sent, ids, outcome=exc.outcome, error=str(exc), **entry)
                    raise LLMFailure(exc.outcome, str(exc), ids) from None
                self._settle(sent, ids, outcome="ok", **entry, **(  # what was left out
                    {"dropped": reply.dropped} if reply.dropped else {}))
                self.ledger.store(key, text, cfg.model, pt, ct)
                _FORMAT_MEMO[cfg.base_url] = mode
                return reply, ids
            latency = time.perf_counter() - started
            extra = {"format_rejected": True} if rejected else {}
            self._settle(sent, ids, outcome=outcome, error=message, latency_s=round(latency, 3),
                         **extra)
            if rejected and modes:
                mode = modes.pop(0)  # the endpoint cannot take this response_format: the next
                attempt -= 1  # (a format probe is not a retry)
                continue
            if rejected or outcome not in RETRYABLE or attempt > cfg.max_retries:
                break  # a transient error is retried in the same mode, with backoff
            delay = cfg.backoff * 2 ** (attempt - 1)
            self.sleep(min(retry_after, 30.0) if retry_after else delay)
        raise LLMFailure(outcome, message, ids)

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        a, b = self.cfg.price_per_1k_prompt, self.cfg.price_per_1k_completion
        if a is None and b is None:
            return None
        return round(prompt_tokens / 1000 * (a or 0) + completion_tokens / 1000 * (b or 0), 6)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after"))
    except (TypeError, ValueError, AttributeError):
        return None
