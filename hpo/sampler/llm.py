"""The LLM analyst: any OpenAI-compatible chat endpoint through the ``openai`` package.

One :meth:`LLMAnalyst.analyse` call: build the prompt (:class:`Prompt`), replay a cached reply
when the storage has one for the same prompt hash, else check the API key and call the endpoint
(:meth:`LLMAnalyst._call`): before each request the study's budget (calls and tokens) is
checked; each request (:meth:`LLMAnalyst._request`) is one ledger entry; a rejected
response_format moves to the next one and a transient error is retried with backoff, as
:mod:`hpo.sampler.llm_request` (:class:`~hpo.sampler.llm_request.Endpoint`,
:class:`~hpo.sampler.llm_request.ResponseFormats`,
:class:`~hpo.sampler.llm_request.RetryPolicy`) says. The reply is parsed tolerantly (code
fences, markup, trailing commas) and validated. Every request's ledger entry is written when
the request is sent (outcome ``sent``: it counts against ``max_calls`` from that moment) and
rewritten in place with its outcome when known; a run that stops waiting for it marks it
``abandoned`` (:class:`InFlight`). Any failure raises :class:`LLMFailure` and the
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
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlparse

from hpo.sampler.analysis import Reply, parse_reply_leniently, reply_schema
from hpo.sampler.history import History
from hpo.sampler.ledger import Ledger, prompt_hash, totals
from hpo.sampler.llm_request import Endpoint, RequestFailed, ResponseFormats, RetryPolicy
from hpo.sampler.prompt import build_messages
from hpo.sampler.settings import LLMConfig

log = logging.getLogger("hpo.sampler")


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


@dataclass(frozen=True)
class Prompt:
    """What one analysis asks the endpoint, built once for all its attempts."""

    messages: list[dict[str, str]]
    schema: dict[str, Any]  # the reply's JSON schema
    key: str  # the prompt hash: the reply cache's key
    base: dict[str, Any]  # the fields of each of its ledger entries: model, prompt_hash, analysis

    @classmethod
    def build(cls, cfg: LLMConfig, h: History, max_proposals: int, analysis_id: str,
              description: str) -> Prompt:
        messages = build_messages(h, max_proposals, description)
        schema = reply_schema(h.space, max_proposals, cfg.reply_text_chars)
        key = prompt_hash(cfg.model, messages, schema)
        return cls(messages, schema, key,
                   {"model": cfg.model, "prompt_hash": key[:16], "analysis": analysis_id})


class LLMAnalyst:
    """Writes analyses with an OpenAI-compatible endpoint; every call goes to the ledger.

    One ``openai`` client serves every request of the analyst; :meth:`close` (or leaving a
    ``with`` block) closes it. An analysis that replays a cached reply, or is refused (no API
    key, budget spent), makes no request and opens no connection:

        >>> import optuna
        >>> study = optuna.create_study()
        >>> cfg = LLMConfig(base_url="https://llm.example.invalid/v1", model="m",
        ...                 api_key_env="HPO_DOCTEST_UNSET_KEY")
        >>> history = History(space={"x": {"type": "float", "low": 0, "high": 1}})
        >>> with LLMAnalyst(cfg, Ledger(study)) as analyst:  # doctest: +ELLIPSIS
        ...     analyst.analyse(history)
        Traceback (most recent call last):
        hpo.sampler.llm.LLMFailure: no_api_key: the environment variable HPO_DOCTEST_UNSET_KEY ...
        >>> [e["outcome"] for e in Ledger(study).entries()]
        ['no_api_key']
    """

    name = "llm"

    def __init__(self, cfg: LLMConfig, ledger: Ledger, max_proposals: int = 3,
                 sleep: Callable[[float], None] = time.sleep,
                 in_flight: InFlight | None = None) -> None:
        self.cfg, self.ledger, self.max_proposals, self.sleep = cfg, ledger, max_proposals, sleep
        self.in_flight = in_flight or InFlight()
        self.endpoint = Endpoint(cfg)
        self.retry = RetryPolicy(cfg.max_retries, cfg.backoff)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the endpoint's client and its connections (a later analysis opens a new one)."""
        self.endpoint.close()

    def analyse(self, h: History, analysis_id: str = "",
                description: str = "") -> tuple[Reply, list[str]]:
        """A validated reply and the ledger ids of the calls made; raises :class:`LLMFailure`.

        The cached reply of the same prompt is replayed (``cache_hit``); else, when the API key
        is there, the endpoint is called (:meth:`_call`).
        """
        prompt = Prompt.build(self.cfg, h, self.max_proposals, analysis_id, description)
        ids: list[str] = []
        hit = self.ledger.cached(prompt.key)
        if hit is not None:
            ids.append(self.ledger.record(outcome="cache_hit", **prompt.base))
            return validate_reply(parse_reply(hit["reply"])), ids
        self._check_api_key(prompt, ids)
        return self._call(prompt, ids), ids

    def _check_api_key(self, prompt: Prompt, ids: list[str]) -> None:
        """LLMFailure (ledger outcome ``no_api_key``) when the key's variable is unset or empty
        and the endpoint is not on this machine."""
        cfg = self.cfg
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env, "").strip() \
                and not is_local(cfg.base_url):
            message = (f"the environment variable {cfg.api_key_env} (api_key_env) is not set or "
                       f"empty, and {urlparse(cfg.base_url).hostname} is not on this machine: "
                       f"set {cfg.api_key_env} to the endpoint's API key")
            log.warning("LLM analyst: %s; the rules analyst takes over", message)
            ids.append(self.ledger.record(outcome="no_api_key", error=message, **prompt.base))
            raise LLMFailure("no_api_key", message, ids)

    def _check_budget(self, prompt: Prompt, ids: list[str]) -> None:
        """LLMFailure (ledger outcome ``budget``) when the study's calls or tokens are spent."""
        cfg, used = self.cfg, self.ledger.usage()
        if used["calls"] >= cfg.max_calls or used["tokens"] >= cfg.max_tokens:
            ids.append(self.ledger.record(outcome="budget", **prompt.base, error=(
                f"budget spent: {used['calls']}/{cfg.max_calls} calls, "
                f"{used['tokens']}/{cfg.max_tokens} tokens")))
            raise LLMFailure("budget", "the study's LLM budget is spent", ids)

    def _call(self, prompt: Prompt, ids: list[str]) -> Reply:
        """Request until a reply is valid: the next response_format when the endpoint rejects
        one (the same attempt number: a format probe is not a retry), the same one again when
        the retry policy says so. Every request is checked against the budget first."""
        formats = ResponseFormats(self.cfg.response_format, self.cfg.base_url)
        attempt = 1
        while True:
            self._check_budget(prompt, ids)
            try:
                reply = self._request(prompt, formats, attempt, ids)
            except RequestFailed as failure:
                if formats.fall_back(failure):
                    continue
                delay = self.retry.delay(attempt, failure)
                if delay is None:
                    raise LLMFailure(failure.outcome, failure.message, ids) from None
                self.sleep(delay)
                attempt += 1
            else:
                formats.remember()
                return reply

    def _request(self, prompt: Prompt, formats: ResponseFormats, attempt: int,
                 ids: list[str]) -> Reply:
        """One request and its one ledger entry (``sent``, then its outcome): the reply parsed,
        validated and cached. RequestFailed when the endpoint gave no reply; LLMFailure when
        the reply is unusable or the run abandoned the request."""
        sent = self._send(prompt.base, attempt, formats.mode, ids)
        started = time.perf_counter()
        try:
            done = self.endpoint.complete(prompt.messages, formats.payload(prompt.schema))
        except RequestFailed as failure:
            self._settle(sent, ids, outcome=failure.outcome, error=failure.message,
                         latency_s=round(time.perf_counter() - started, 3),
                         **({"format_rejected": True} if failure.format_rejected else {}))
            raise
        pt, ct = done.prompt_tokens, done.completion_tokens
        entry = {"latency_s": round(time.perf_counter() - started, 3), "prompt_tokens": pt,
                 "completion_tokens": ct, "cost": self._cost(pt, ct)}
        try:
            reply = validate_reply(parse_reply(done.text))
        except InvalidReply as exc:
            self._settle(sent, ids, outcome=exc.outcome, error=str(exc), **entry)
            raise LLMFailure(exc.outcome, str(exc), ids) from None
        self._settle(sent, ids, outcome="ok", **entry, **(  # what was left out
            {"dropped": reply.dropped} if reply.dropped else {}))
        self.ledger.store(prompt.key, done.text, self.cfg.model, pt, ct)
        return reply

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

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        a, b = self.cfg.price_per_1k_prompt, self.cfg.price_per_1k_completion
        if a is None and b is None:
            return None
        return round(prompt_tokens / 1000 * (a or 0) + completion_tokens / 1000 * (b or 0), 6)
