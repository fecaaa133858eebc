"""The prompt an LLM analyst reads: task, search space, compact history, earlier analyses.

Deterministic (sorted keys, rounded numbers, no timestamps), so the same history gives the same
prompt hash and a cached reply can be replayed; bounded in size at any number of trials because
it is built from :func:`hpo.sampler.history.compact`.

    >>> from hpo.sampler.history import History
    >>> msgs = build_messages(History(space={"x": {"type": "float", "low": 0, "high": 1}}), 2)
    >>> [m["role"] for m in msgs]
    ['system', 'user']
"""

from __future__ import annotations

import json
from typing import Any

from hpo.sampler.history import History, compact

SYSTEM = """You are an experienced machine-learning engineer tuning hyperparameters.
You read a study's trial history and write a tuning analysis as JSON, nothing else:
- "summary": one paragraph.
- "diagnosis": the training state (one of: underfitting, overfitting, diverging, converging,
  plateau, range_edge, unstable, exploring) with evidence: numbers copied from the trials and
  curve shapes below (trial number, metric, value, note).
- "proposals": each a COMPLETE set of values for every parameter of the search space, inside
  its bounds and choices, different from every trial already run, with rationale, expected
  effect, risk, confidence (0 to 1) and alternatives.
Curves are summarised as first/best/best_epoch/last/trend per metric; "source" says whether a
trial came from TPE or from an earlier analysis ("earlier_analyses" shows how those did)."""


def build_messages(h: History, max_proposals: int, description: str = "") -> list[dict[str, str]]:
    payload: dict[str, Any] = {
        "task": {"study": h.study, "metric": h.metric, "direction": h.direction,
                 **({"description": description} if description else {})},
        "search_space": h.space,
        "history": compact(h),
        "request": f"Write the analysis with 1 to {max_proposals} proposals.",
    }
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": json.dumps(payload, sort_keys=True, default=str)}]
