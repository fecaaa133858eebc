"""The LLM call ledger and the reply cache, both in the study's system attrs.

Every request to the endpoint (and every cache hit or refused call) is one ledger entry,
``hpo:ledger:<utc time>-<random>``::

    {"time": "...", "model": "gpt-4o-mini", "outcome": "ok",   # ok | cache_hit | http_429 |
     "prompt_tokens": 812, "completion_tokens": 301,           # http_500 | timeout | connection |
     "latency_s": 2.31, "cost": 0.0004, "attempt": 1,          # invalid_json | invalid_schema |
     "prompt_hash": "9f2c...", "analysis": "every_n-0010",     # budget | no_api_key | error
     "error": null, "response_format": "json_schema"}

``http_4xx``/``http_500`` entries whose body said the response_format was what the endpoint
could not take also carry ``"format_rejected": true`` (the next entry tries the next format).
An ``ok`` entry whose reply had malformed parts left out says which in ``"dropped"``.

How entries count (:func:`read_totals`, the one reader of this format: the sampler's budget
and ``hpo report`` both use it):

* a **paid call** is a request actually sent to the endpoint, whatever came back: ``ok``,
  ``invalid_json``, ``invalid_schema``, ``http_*``, ``timeout``, ``connection``, ``error``,
  ``sent`` (recorded when sent, its outcome not known yet) and ``abandoned`` (the run stopped
  waiting for it), and any outcome this reader does not know (counted, to be safe);
* a **failure** is a paid call that gave no usable reply: every paid call but ``ok`` and
  ``sent`` (still pending);
* not paid calls: ``cache_hit`` (a stored reply replayed), and the refusals ``budget`` and
  ``no_api_key`` (no request was made).

A ``sent`` entry is meant to be rewritten in place with its outcome (:meth:`Ledger.update`),
so one request is always one entry.

Replies are cached under ``hpo:llm_cache:<prompt hash>`` (the hash covers model, messages and
schema), so a study resumed on another machine replays a reply instead of paying again. The
API key is never written anywhere.

    >>> import optuna
    >>> study = optuna.create_study()
    >>> led = Ledger(study)
    >>> _ = led.record(outcome="ok", model="m", prompt_tokens=10, completion_tokens=5)
    >>> _ = led.record(outcome="no_api_key", model="m")
    >>> led.usage()
    {'calls': 1, 'tokens': 15, 'cost': 0.0}
    >>> t = read_totals(study)
    >>> t.calls, t.failures, t.refused
    (1, 0, 1)
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import optuna

from hpo.record import LEDGER_PREFIX, LLM_CACHE_PREFIX
from hpo.sampler.store import set_system_attr, system_attrs

OK = ("ok",)
PENDING = ("sent",)  # sent, outcome not recorded yet (the process may have died waiting)
CACHE_HIT = "cache_hit"
REFUSED = ("budget", "no_api_key")  # refused before any request: nothing was sent or paid
NOT_CALLS = (CACHE_HIT, *REFUSED)  # every other outcome, unknown ones included, is a paid call
FAILED = ("invalid_json", "invalid_schema", "http_429", "http_500", "http_4xx", "timeout",
          "connection", "error", "abandoned")  # known failures (unknown outcomes count too)


def is_paid_call(entry: dict[str, Any]) -> bool:
    """Whether a ledger entry is a request sent to the endpoint (see the module docstring)."""
    return entry.get("outcome") not in NOT_CALLS


def is_failure(entry: dict[str, Any]) -> bool:
    """Whether a ledger entry is a paid call that gave no usable reply."""
    return is_paid_call(entry) and entry.get("outcome") not in OK + PENDING


@dataclass
class LedgerTotals:
    """Totals over every ledger entry of a study (all workers, all runs)."""

    calls: int = 0  # paid calls: requests sent to the endpoint
    tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0  # paid calls with no usable reply
    pending: int = 0  # paid calls whose outcome is not recorded (yet)
    cache_hits: int = 0
    refused: int = 0  # no request made: budget spent or no API key
    cost: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)  # entries per outcome


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _cost(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def totals(entries: list[dict[str, Any]]) -> LedgerTotals:
    """Count ledger entries (a malformed one is skipped, never fatal)."""
    t = LedgerTotals()
    for e in entries:
        if not isinstance(e, dict):
            continue
        outcome = str(e.get("outcome"))
        t.outcomes[outcome] = t.outcomes.get(outcome, 0) + 1
        if outcome == CACHE_HIT:
            t.cache_hits += 1
        elif outcome in REFUSED:
            t.refused += 1
        else:
            t.calls += 1
            t.failures += is_failure(e)
            t.pending += outcome in PENDING
            pt, ct = _int(e.get("prompt_tokens")), _int(e.get("completion_tokens"))
            t.prompt_tokens, t.completion_tokens = t.prompt_tokens + pt, t.completion_tokens + ct
            t.tokens += pt + ct
            t.cost += _cost(e.get("cost"))
    t.cost = round(t.cost, 6)
    return t


def read_entries(study: optuna.Study, attrs: dict[str, Any] | None = None
                 ) -> list[dict[str, Any]]:
    """Every ledger entry of ``study``, oldest first, each with its ``id`` (``attrs``: the
    study's system attrs, when the caller has read them already)."""
    attrs = system_attrs(study) if attrs is None else attrs
    return [{"id": k[len(LEDGER_PREFIX):], **attrs[k]}
            for k in sorted(attrs) if k.startswith(LEDGER_PREFIX) and isinstance(attrs[k], dict)]


def read_totals(study: optuna.Study, attrs: dict[str, Any] | None = None) -> LedgerTotals:
    """The study's ledger counted (zeros when it made no LLM call); ``attrs`` as for
    :func:`read_entries`."""
    return totals(read_entries(study, attrs))


def prompt_hash(model: str, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> str:
    blob = json.dumps({"model": model, "messages": messages, "schema": schema}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class Ledger:
    """Append-only record of LLM calls, and the prompt-hash reply cache, of one study."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    def record(self, **entry: Any) -> str:
        now = datetime.now(UTC)
        key = f"{now.strftime('%Y%m%dT%H%M%S.%f')}-{secrets.token_hex(3)}"
        entry = {"time": now.isoformat(), "prompt_tokens": 0, "completion_tokens": 0,
                 "latency_s": 0.0, "cost": 0.0, **entry}
        if entry.get("error"):
            entry["error"] = str(entry["error"])[:300]
        set_system_attr(self.study, LEDGER_PREFIX + key, entry)
        return key

    def update(self, key: str, **fields: Any) -> None:
        """Rewrite entry ``key`` with ``fields`` (a ``sent`` entry gets its outcome)."""
        old = system_attrs(self.study).get(LEDGER_PREFIX + key) or {}
        entry = {**old, **fields}
        if entry.get("error"):
            entry["error"] = str(entry["error"])[:300]
        set_system_attr(self.study, LEDGER_PREFIX + key, entry)

    def entries(self) -> list[dict[str, Any]]:
        return read_entries(self.study)

    def totals(self) -> LedgerTotals:
        return totals(self.entries())  # a subclass's entries() (e.g. a dry run's) count too

    def usage(self) -> dict[str, Any]:
        """Paid calls, their tokens and cost so far (all workers, all runs)."""
        t = self.totals()
        return {"calls": t.calls, "tokens": t.tokens, "cost": t.cost}

    def cached(self, key: str) -> dict[str, Any] | None:
        return system_attrs(self.study).get(LLM_CACHE_PREFIX + key)

    def store(self, key: str, reply: str, model: str, prompt_tokens: int,
              completion_tokens: int) -> None:
        set_system_attr(self.study, LLM_CACHE_PREFIX + key, {
            "model": model, "reply": reply, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "time": datetime.now(UTC).isoformat()})
