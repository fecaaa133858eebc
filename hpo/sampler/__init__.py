"""The LLM-informed sampler: TPE plus analysts whose proposals become enqueued trials.

Knows nothing of PyTorch. Start at :mod:`hpo.sampler.llm_tpe`; the analysis format is in
:mod:`hpo.sampler.analysis`, the analysts in :mod:`hpo.sampler.rules` and :mod:`hpo.sampler.llm`.

The names below load on first use (:mod:`hpo.lazy`), so ``hpo.config`` importing
:mod:`hpo.sampler.settings` does not pull in the sampler and optuna-dashboard (about 1 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo.lazy import lazy_exports

if TYPE_CHECKING:
    from hpo.sampler.analysis import Analysis, Proposal, Reply
    from hpo.sampler.llm_tpe import LLMTPESampler
    from hpo.sampler.settings import LLMConfig, LLMTPEOptions
    from hpo.sampler.store import load_analyses

_LAZY = {
    "Analysis": "hpo.sampler.analysis", "Proposal": "hpo.sampler.analysis",
    "Reply": "hpo.sampler.analysis", "LLMTPESampler": "hpo.sampler.llm_tpe",
    "LLMConfig": "hpo.sampler.settings", "LLMTPEOptions": "hpo.sampler.settings",
    "load_analyses": "hpo.sampler.store",
}
__all__ = ["Analysis", "LLMConfig", "LLMTPEOptions", "LLMTPESampler", "Proposal", "Reply",
           "load_analyses"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
