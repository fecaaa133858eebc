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
``budget`` and ``no_api_key`` entries are refusals: no request was made, nothing was paid.

Replies are cached under ``hpo:llm_cache:<prompt hash>`` (the hash covers model, messages and
schema), so a study resumed on another machine replays a reply instead of paying again. The
API key is never written anywhere.

    >>> import optuna
    >>> study = optuna.create_study()
    >>> led = Ledger(study)
    >>> _ = led.record(outcome="ok", model="m", prompt_tokens=10, completion_tokens=5)
    >>> led.usage()
    {'calls': 1, 'tokens': 15, 'cost': 0.0}
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import optuna

from hpo.sampler.store import set_system_attr, system_attrs

LEDGER_PREFIX = "hpo:ledger:"
CACHE_PREFIX = "hpo:llm_cache:"
PAID = ("ok", "invalid_json", "invalid_schema")  # the endpoint answered: tokens were spent
CALLS = PAID + ("http_429", "http_500", "http_4xx", "timeout", "connection", "error")


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

    def entries(self) -> list[dict[str, Any]]:
        attrs = system_attrs(self.study)
        return [{"id": k[len(LEDGER_PREFIX):], **attrs[k]}
                for k in sorted(attrs) if k.startswith(LEDGER_PREFIX)]

    def usage(self) -> dict[str, Any]:
        """Requests made, tokens spent and cost so far (all workers, all runs)."""
        rows = [e for e in self.entries() if e.get("outcome") in CALLS]
        return {"calls": len(rows),
                "tokens": sum(e["prompt_tokens"] + e["completion_tokens"] for e in rows),
                "cost": round(sum(e.get("cost") or 0.0 for e in rows), 6)}

    def cached(self, key: str) -> dict[str, Any] | None:
        return system_attrs(self.study).get(CACHE_PREFIX + key)

    def store(self, key: str, reply: str, model: str, prompt_tokens: int,
              completion_tokens: int) -> None:
        set_system_attr(self.study, CACHE_PREFIX + key, {
            "model": model, "reply": reply, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "time": datetime.now(UTC).isoformat()})
