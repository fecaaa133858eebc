"""hpo: Optuna studies of PyTorch image models, with an LLM-informed sampler and reports.

The public API (each name loads its module on first use, so ``import hpo`` stays light):

- :func:`load_study` reads ``studies/NAME.yaml`` (and its search space) into a
  :class:`StudyConfig`; :class:`SearchSpace` is the space, :class:`TrainConfig` one trial's recipe.
- :func:`run_study` runs (or continues) a study; :func:`join_study` is ``hpo worker``.
- :class:`Trainer` trains one configuration with no Optuna at all.
- :class:`LLMTPESampler` is TPE plus analysts whose proposals become enqueued trials.
- :func:`build_report` and :func:`build_compare` write the HTML/Markdown reports;
  :func:`migrate_study` moves a study between storages; :func:`open_storage` opens one.

    >>> import hpo
    >>> cfg = hpo.load_study("mobilenet")
    >>> cfg.model.name, cfg.budget.n_trials
    ('mobilenetv3_small_050', 25)
    >>> sorted(cfg.space.params)[:3]
    ['batch_size', 'head_dropout', 'label_smoothing']
    >>> hpo.TrainConfig(lr=0.05).lr
    0.05
    >>> study = hpo.run_study(cfg, "sqlite:///runs/hpo.db")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo.lazy import lazy_exports

if TYPE_CHECKING:
    from hpo.config import StudyConfig, load_study
    from hpo.migrate import migrate_study
    from hpo.report import build_report
    from hpo.report.compare import build_compare
    from hpo.runner import join_study, run_study
    from hpo.sampler.llm_tpe import LLMTPESampler
    from hpo.space import SearchSpace
    from hpo.storage import open_storage
    from hpo.training import TrainConfig, Trainer

_LAZY = {
    "StudyConfig": "hpo.config", "load_study": "hpo.config", "SearchSpace": "hpo.space",
    "TrainConfig": "hpo.training", "Trainer": "hpo.training",
    "run_study": "hpo.runner", "join_study": "hpo.runner",
    "LLMTPESampler": "hpo.sampler.llm_tpe",
    "build_report": "hpo.report", "build_compare": "hpo.report.compare",
    "migrate_study": "hpo.migrate", "open_storage": "hpo.storage",
}
__all__ = ["LLMTPESampler", "SearchSpace", "StudyConfig", "TrainConfig", "Trainer",
           "build_compare", "build_report", "join_study", "load_study", "migrate_study",
           "open_storage", "run_study"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
