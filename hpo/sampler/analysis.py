"""The analysis: the structured form of a practitioner's tuning report (pydantic schema).

An analyst (rule-based or LLM) reads the trial history and writes an :class:`Analysis`: one or
more diagnoses of the training state, each with its evidence (numbers from trials and curves),
and proposals, each a full set of parameter values with rationale, expected effect, risk,
confidence and alternatives. The sampler then checks each proposal against the search space,
adds its diff from the best trial, and enqueues it as a WAITING trial.

Stored format (a colleague's report reads it; keep it stable, bump ``version`` on change)
------------------------------------------------------------------------------------------
Each analysis is one JSON object in the study's *system attrs* under the key
``hpo:analysis:<id>`` (its models: :mod:`hpo.record`, read and written there)::

    {"version": 1,
     "id": "every_n-0010",            # <trigger>-<finished trials seen>, sortable
     "trigger": "every_n",            # every_n | patience | warm_start | manual
     "created_at": "2025-01-01T12:00:00+00:00",
     "analyst": "llm",                # who wrote it: llm | rules
     "model": "gpt-4o-mini",          # null for rules
     "fallback_reason": null,         # why rules took over from the LLM (timeout, budget, ...)
     "n_trials_seen": 10, "best_trial": 7, "best_value": 0.93, "best_params": {...},
     "summary": "one paragraph",
     "diagnosis": [{"state": "overfitting",   # see STATES
                    "summary": "val loss rises after epoch 4 while train loss falls",
                    "evidence": [{"trial": 7, "metric": "val_loss", "value": 0.41,
                                  "note": "min 0.29 at epoch 4, 0.41 at epoch 8"}]}],
     "proposals": [{"params": {"lr": 0.003, ...},       # complete, checked set of values
                    "rationale": "...", "expected_effect": "...", "risk": "...",
                    "confidence": 0.6,                   # 0..1
                    "alternatives": [{"params": {"lr": 0.001, ...},  # checked like params
                                      "note": "more conservative",
                                      "corrections": []}],
                    "diff": [{"param": "lr", "old": 0.01, "new": 0.003, "change": "decrease"}],
                    "corrections": ["lr: 0.5 clipped to 0.03"],
                    "status": "enqueued",    # enqueued | duplicate | capped | over_budget | dropped | dry_run
                    "trial_number": 12}],    # the enqueued trial (look up its outcome)
     "dropped": [],                          # malformed parts of the reply left out
     "ledger": ["0003"]}                     # LLM calls made for it (hpo:ledger:<id>)

An alternative is data, checked like its proposal (:func:`check_alternatives`): the values it
names are made valid for the space, the others are the proposal's, and ``corrections`` says
what was changed among the values it named. One that names no value (advice outside the
space, e.g. "more epochs") keeps ``params: {}``.

A reply is validated leniently (:func:`parse_reply_leniently`): a malformed prose part (a
string ``diagnosis``, an evidence item that is not an object, a ``rationale`` that is a list,
an alternative whose params are text) is left out and named in ``dropped``, e.g.
``diagnosis.0: expected an object, got 'lr too high' (dropped)``, and the valid proposals are
kept. Only a reply left with no usable proposal is rejected, with a message that names each
field path, what was expected and what came (:func:`describe_validation_error`).

The enqueued trial carries user attrs ``hpo_source`` (``llm`` or ``rules``), ``hpo_analysis``
(the analysis id) and ``hpo_proposal`` (its index), so outcomes can be joined both ways.

    >>> p = Proposal(params={"lr": 0.01}, rationale="lower lr", confidence=1.7)
    >>> p.confidence
    1.0
    >>> reply, dropped = parse_reply_leniently({"diagnosis": "lr too high",
    ...                                         "proposals": [{"params": {"lr": 0.01}}]})
    >>> len(reply.proposals), dropped
    (1, ["diagnosis.0: expected an object, got 'lr too high' (dropped)"])
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

# the stored format's models live with every other stored value, in hpo.record
from hpo.record import (
    ANALYSIS_VERSION,
    STATES,
    TRIGGERS,
    Alternative,
    Analysis,
    Change,
    Diagnosis,
    Evidence,
    Proposal,
    Reply,
)

if TYPE_CHECKING:
    from hpo.space import SearchSpace

VERSION = ANALYSIS_VERSION

__all__ = [
    "STATES",
    "TRIGGERS",
    "VERSION",
    "Alternative",
    "Analysis",
    "Change",
    "Diagnosis",
    "Evidence",
    "Proposal",
    "Reply",
    "ReplySchemaError",
    "check_alternatives",
    "describe_validation_error",
    "diff_params",
    "parse_reply_leniently",
    "reply_schema",
]


def diff_params(best: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Old -> new for every parameter that differs from the best trial's config."""
    changes = []
    for name in dict.fromkeys([*best, *new]):
        old, value = best.get(name), new.get(name)
        if old == value and type(old) is type(value):
            continue
        kind = "set"
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (old, value))
        if numeric:
            kind = "increase" if value > old else "decrease" if value < old else "same"
        changes.append(Change(param=name, old=old, new=value, change=kind))
    return changes


def check_alternatives(proposal: Proposal, space: SearchSpace) -> Proposal:
    """Check each alternative of an already checked ``proposal`` against ``space``, in place.

    The values an alternative names go through :meth:`hpo.space.SearchSpace.check` like a
    proposal's (unknown names dropped, numbers clipped and snapped, choices matched); the
    values it leaves out are the proposal's. ``corrections`` lists what was changed among the
    values it named. An alternative that names none keeps ``params == {}``.

        >>> from hpo.space import SearchSpace
        >>> space = SearchSpace.model_validate({"params": {
        ...     "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
        ...     "opt": {"type": "categorical", "choices": ["adamw", "sgd"]}}})
        >>> p = Proposal(params={"lr": 0.01, "opt": "adamw"},
        ...              alternatives=[Alternative(params={"lr": 3.0}, note="bolder")])
        >>> alt = check_alternatives(p, space).alternatives[0]
        >>> alt.params, alt.corrections
        ({'lr': 0.1, 'opt': 'adamw'}, ['lr: 3.0 clipped to 0.1'])
    """
    for alt in proposal.alternatives:
        if not alt.params:
            continue
        named = set(alt.params)
        clean, corrections = space.check(alt.params, fill=proposal.params)
        alt.params = clean
        alt.corrections = [*alt.corrections,
                           *(c for c in corrections if c.split(": ", 1)[0] in named)]
    return proposal


# -- reading a reply: readable schema errors, partial replies -----------------------------------
class ReplySchemaError(ValueError):
    """A reply with no usable proposal; the message names each field path, expected and got."""


_EXPECTED = {"dict_type": "an object", "model_type": "an object",
             "model_attributes_type": "an object", "list_type": "a list",
             "string_type": "a string", "float_type": "a number", "float_parsing": "a number",
             "int_type": "an integer", "int_parsing": "an integer",
             "int_from_float": "a whole number", "bool_type": "true or false",
             "bool_parsing": "true or false", "finite_number": "a finite number"}
_MAX_DROPPED = 8  # entries in ``dropped`` (then "... and N more")


def _got(value: Any, width: int = 40) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _path(*loc: Any) -> str:
    return ".".join(str(x) for x in loc) or "reply"


def describe_error(error: dict[str, Any], prefix: tuple[Any, ...] = ()) -> str:
    """One pydantic error as ``path: expected WHAT, got VALUE``.

        >>> describe_error({"type": "float_parsing", "loc": ("params", "lr"), "input": "high",
        ...                 "msg": "Input should be a valid number"}, prefix=("proposals", 0))
        "proposals.0.params.lr: expected a number, got 'high'"
    """
    where = _path(*prefix, *error.get("loc", ()))
    if error.get("type") == "missing":
        return f"{where}: missing"
    return f"{where}: expected {_expected(error)}, got {_got(error.get('input'))}"


def _expected(error: dict[str, Any]) -> str:
    if "expected" in error:  # merged by _errors
        return error["expected"]
    msg = str(error.get("msg", ""))
    return _EXPECTED.get(error.get("type", "")) or msg.removeprefix("Input should be ").rstrip(".")


_TAG = re.compile(r"^(float|int|str|bool|none|bytes|[a-z]+\[.*\])$")


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    """``exc``'s errors, those of one union field (``value.float``, ``value.str``) merged
    into one (``value: expected a number or a string``)."""
    out: list[dict[str, Any]] = []
    for e in exc.errors(include_url=False):
        loc = tuple(e.get("loc", ()))
        if loc and isinstance(loc[-1], str) and _TAG.match(loc[-1]):
            e = {**e, "loc": loc[:-1], "expected": _expected(e)}
            if out and out[-1].get("loc") == e["loc"] and "expected" in out[-1]:
                if e["expected"] not in out[-1]["expected"]:
                    out[-1]["expected"] += f" or {e['expected']}"
                continue
        out.append(e)
    return out


def _join(parts: list[str], limit: int) -> str:
    out = ""
    for i, part in enumerate(parts):
        joined = f"{out}; {part}" if out else part
        if len(joined) > limit - 16 and out:
            return f"{out}; (+{len(parts) - i} more)"
        out = joined
    return out[:limit]


def describe_validation_error(exc: ValidationError, prefix: tuple[Any, ...] = (),
                              limit: int = 300) -> str:
    """Every error of ``exc`` as ``path: expected WHAT, got VALUE``, joined, at most ``limit``
    characters (``(+N more)`` says how many did not fit).

        >>> try:
        ...     Reply.model_validate({"summary": ["a"], "proposals": [{"params": "lr=1"}]})
        ... except ValidationError as exc:
        ...     print(describe_validation_error(exc))
        summary: expected a string, got ["a"]; proposals.0.params: expected an object, got 'lr=1'
    """
    return _join(_unique(describe_error(e, prefix) for e in _errors(exc)), limit)


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _salvage(model: type[BaseModel], raw: Any, at: tuple[Any, ...], dropped: list[str],
             essential: tuple[str, ...] = ()) -> BaseModel | None:
    """``raw`` as ``model``, its malformed parts left out (each named in ``dropped``); None
    when ``raw`` is not an object or a field in ``essential`` is malformed."""
    data = dict(raw) if isinstance(raw, dict) else raw
    for _ in range(50):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = _errors(exc)
        if not isinstance(data, dict):
            dropped.extend(f"{describe_error(e, at)} (dropped)" for e in errors[:1])
            return None
        cut: dict[str, set[int]] = {}  # field -> indexes of list items to leave out
        for e in errors:
            loc = tuple(e.get("loc", ()))
            name = loc[0] if loc else None
            if name is None or name in essential or name not in data:
                dropped.append(f"{describe_error(e, at)} (dropped {_path(*at)})")
                return None
            if len(loc) > 1 and isinstance(loc[1], int) and isinstance(data[name], list):
                cut.setdefault(name, set()).add(loc[1])
                whole = (*at, name, loc[1])
            else:
                cut[name] = set()
                whole = (*at, name)
            what = describe_error(e, at)
            dropped.append(f"{what} (dropped)" if tuple(loc) == whole[len(at):]
                           else f"{what} (dropped {_path(*whole)})")
        for name, indexes in cut.items():
            if indexes and isinstance(data.get(name), list):
                data[name] = [x for i, x in enumerate(data[name]) if i not in indexes]
            else:
                data.pop(name, None)
    return None


def _as_list(v: Any) -> list[Any]:
    return [] if v is None else v if isinstance(v, list) else [v]


def parse_reply_leniently(data: Any) -> tuple[Reply, list[str]]:
    """A :class:`Reply` from an analyst's parsed JSON, and what had to be left out.

    A valid reply comes back whole, with ``dropped == []``. Otherwise each malformed part is
    left out and named in ``dropped`` (``path: expected WHAT, got VALUE (dropped ...)``): the
    summary, a diagnosis or an evidence item, a proposal's prose field or alternative; a
    proposal whose ``params`` is malformed is left out whole. The reply's ``dropped`` field
    holds the same list (bounded). Raises :class:`ReplySchemaError` when the reply is not an
    object, or had proposals and none is usable (its message names every error).
    """
    try:
        reply = Reply.model_validate(data)
    except ValidationError as exc:
        first = exc
    else:
        reply.dropped = []
        return reply, []
    if not isinstance(data, dict):
        raise ReplySchemaError(describe_validation_error(first))
    dropped: list[str] = []
    rest = {k: v for k, v in data.items() if k not in ("diagnosis", "proposals", "dropped")}
    head = _salvage(Reply, rest, (), dropped) or Reply()
    diagnosis = [d for i, raw in enumerate(_as_list(data.get("diagnosis")))
                 if (d := _salvage(Diagnosis, raw, ("diagnosis", i), dropped)) is not None]
    raw_proposals = _as_list(data.get("proposals"))
    proposals = [p for i, raw in enumerate(raw_proposals)
                 if (p := _salvage(Proposal, raw, ("proposals", i), dropped,
                                   essential=("params",))) is not None]
    if raw_proposals and not proposals:
        raise ReplySchemaError("no usable proposal: " + describe_validation_error(first))
    if len(dropped) > _MAX_DROPPED:
        dropped = [*dropped[:_MAX_DROPPED], f"... and {len(dropped) - _MAX_DROPPED} more"]
    dropped = [d if len(d) <= 200 else d[:197] + "..." for d in dropped]
    return head.model_copy(update={"diagnosis": diagnosis, "proposals": proposals,
                                   "dropped": dropped}), dropped


def reply_schema(space: dict[str, dict[str, Any]], max_proposals: int = 3,
                 text_chars: int = 400) -> dict[str, Any]:
    """JSON schema of a :class:`Reply` with ``params`` spelled out from the search space.

    Self-contained (no ``$ref``), so both OpenAI's ``json_schema`` and llama.cpp's grammar
    converter accept it; ``params`` lists the space's names, so a constrained model cannot
    invent one. Every text is at most ``text_chars`` long (``llm.reply_text_chars``): a
    grammar-constrained local model writes its reply within ``reply_max_tokens`` and fast.
    """
    props: dict[str, Any] = {}
    for name, p in space.items():
        if p["type"] == "categorical":
            props[name] = {"enum": list(p["choices"])}
        else:
            props[name] = {"type": "integer" if p["type"] == "int" else "number"}
    text = {"type": "string", "maxLength": text_chars}
    evidence = {"type": "object", "additionalProperties": False,
                "properties": {"trial": {"type": "integer"}, "metric": {"type": "string"},
                               "value": {"type": "number"}, "note": text},
                "required": ["trial", "metric", "value", "note"]}
    diagnosis = {"type": "object", "additionalProperties": False,
                 "properties": {"state": {"enum": list(STATES)}, "summary": text,
                                "evidence": {"type": "array", "items": evidence, "maxItems": 3}},
                 "required": ["state", "summary", "evidence"]}
    params = {"type": "object", "additionalProperties": False, "properties": props,
              "required": list(props)}
    alternative = {"type": "object", "additionalProperties": False,
                   "properties": {"params": params, "note": text}, "required": ["params", "note"]}
    proposal = {"type": "object", "additionalProperties": False,
                "properties": {"params": params, "rationale": text, "expected_effect": text,
                               "risk": text, "confidence": {"type": "number"},
                               "alternatives": {"type": "array", "items": alternative,
                                                "maxItems": 1}},
                "required": ["params", "rationale", "expected_effect", "risk", "confidence",
                             "alternatives"]}
    return {"type": "object", "additionalProperties": False,
            "properties": {"summary": text,
                           "diagnosis": {"type": "array", "items": diagnosis, "minItems": 1,
                                         "maxItems": 2},
                           "proposals": {"type": "array", "items": proposal, "minItems": 1,
                                         "maxItems": max_proposals}},
            "required": ["summary", "diagnosis", "proposals"]}
