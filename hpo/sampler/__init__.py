"""The LLM-informed sampler: TPE plus analysts whose proposals become enqueued trials.

Knows nothing of PyTorch. Start at :mod:`hpo.sampler.llm_tpe`; the analysis format is in
:mod:`hpo.sampler.analysis`, the analysts in :mod:`hpo.sampler.rules` and :mod:`hpo.sampler.llm`.
"""

from hpo.sampler.analysis import Analysis, Proposal, Reply
from hpo.sampler.llm_tpe import LLMTPESampler
from hpo.sampler.settings import LLMConfig, LLMTPEOptions
from hpo.sampler.store import load_analyses

__all__ = ["Analysis", "LLMConfig", "LLMTPEOptions", "LLMTPESampler", "Proposal", "Reply",
           "load_analyses"]
