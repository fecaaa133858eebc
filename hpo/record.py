"""What does hpo store? Every key hpo keeps in an Optuna study or trial, defined once, here.

A study in storage is hpo's whole record of a run: its config, the trials and their curves,
the analysts' analyses, the LLM ledger, checkpoint pointers. This module names every key
(and key prefix) hpo writes there, and the keys Optuna and optuna-dashboard write that hpo
reads, grouped by where each lives. The strings are the stored format: changing one orphans
every existing study, so they never change (only their Python names may).

=====  ======  ===============================  ===============================================
where  attrs   key                              value
=====  ======  ===============================  ===============================================
study  user    ``hpo_config``                   the study's config (JSON, passwords redacted)
study  user    ``search_space``                 the search space (JSON)
study  user    ``hpo_artifacts``                where its checkpoints are (absolute path, s3://)
study  user    ``hpo_data``                     the data set's facts (:class:`DataFacts`)
study  system  ``hpo:moved_to``                 ``{url, at}``: ``hpo migrate`` moved the study
study  system  ``hpo:analysis:<id>``            one analyst's analysis (JSON)
study  system  ``hpo:claim:<id>``               the worker that took analysis round ``<id>``
study  system  ``hpo:ledger:<key>``             one LLM request: outcome, tokens, cost
study  system  ``hpo:llm_cache:<key>``          an LLM reply, replayed by a redone round
study  system  ``hpo:checkpoint_removed:<id>``  ``True``: that checkpoint file is gone
study  system  ``hpo:test:<trial number>``      that trial's held-out test evaluation (JSON)
trial  user    ``hpo_run_by``                   ``{host, pid}`` of the worker that ran it
trial  user    ``hpo_source``                   ``llm``/``rules``: it runs an analyst's proposal
trial  user    ``hpo_analysis``                 the id of the analysis that proposed it
trial  user    ``hpo_proposal``                 the proposal's index in that analysis
trial  user    ``checkpoint``                   ``{artifact_id, epoch, trial, ...}``: newest one
trial  user    ``curve``                        ``{metric: [one value per epoch]}``
trial  user    ``epochs``                       epochs trained so far
trial  user    ``duration_s``                   seconds it trained
trial  user    ``resumed``                      ``{from_trial, epoch, at}``: where it resumed from
trial  user    ``prune_reason``                 why it was pruned (or is an invalid combination)
trial  user    ``fail_reason``                  why it failed, or why it was never run
trial  user    ``effective_batch_size``         batch size after gradient accumulation
trial  user    ``optimizer_steps``              optimizer steps of the whole run
trial  user    ``n_train``                      training images (``train_size``: older name)
trial  user    ``data_skipped_files``           unreadable image files the data set skipped
trial  user    ``latency_ms``                   batch-1 latency, median ms (multi-objective)
trial  user    ``params_m``                     parameters in millions (multi-objective)
trial  system  ``hpo:lost_race``                ``True``: created but never run; leave it out
trial  system  ``hpo:create_token``             a created trial's mark (retried creates)
trial  system  ``hpo:unrun_proposal``           ``True``: a proposal dropped unrun at run end
=====  ======  ===============================  ===============================================

Written by Optuna or optuna-dashboard, read by hpo: ``fixed_params``, ``failed_trial``,
``retry_history``, ``fail_reason`` (trial system attrs), ``artifacts:<id>`` (trial or study
system attrs) and ``dashboard:...`` (study system attrs: the notes). Trial states hpo groups:
:data:`FINISHED` (count against the budget) and :data:`ENDED` (will not run again).

    >>> import optuna
    >>> study = optuna.create_study()
    >>> study.set_user_attr(CONFIG_ATTR, {"name": "demo"})
    >>> trial = study.ask()
    >>> trial.set_user_attr(EPOCHS_ATTR, 3)
    >>> _ = study.tell(trial, 0.5)
    >>> study.user_attrs, study.trials[0].user_attrs
    ({'hpo_config': {'name': 'demo'}}, {'epochs': 3})
    >>> [t.number for t in study.trials if t.state in FINISHED], ANALYSIS_PREFIX + "every_n-0010"
    ([0], 'hpo:analysis:every_n-0010')

Nothing here imports PyTorch or the rest of hpo.
"""

from __future__ import annotations

import math
import warnings
from datetime import UTC, datetime
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hpo.optuna_private import set_study_system_attr

# -- study user attrs (hpo) ------------------------------------------------------------------

# study user attr: the StudyConfig as JSON, passwords redacted (hpo.runner writes it when it
# creates the study; workers, reports, the dashboard and migrate read it)
CONFIG_ATTR = "hpo_config"
# study user attr: the SearchSpace as JSON (written with CONFIG_ATTR)
SPACE_ATTR = "search_space"
# study user attr: where the study's checkpoints are (absolute folder or s3://BUCKET), recorded
# by its first run (hpo.checkpoint)
ARTIFACTS_ATTR = "hpo_artifacts"
# study user attr: the study's data set facts (DataFacts as JSON), written when the study starts:
# class names in index order, preprocessing, counts per split and class, fingerprint, skipped files
DATA_ATTR = "hpo_data"

# -- study system attrs (hpo) ----------------------------------------------------------------

# study system attr: {"url": destination (password redacted), "at": time} of a study that
# `hpo migrate` moved elsewhere (a system attr: the user attrs of source and copy stay equal)
MOVED_ATTR = "hpo:moved_to"
# study system attr prefix, + analysis id: one analysis as JSON (hpo.sampler.analysis format)
ANALYSIS_PREFIX = "hpo:analysis:"
# study system attr prefix, + analysis id: {"worker": "host:pid", "at": ISO time, ...}, the
# worker that took that analysis round (maybe "abandoned", "retaken_from")
CLAIM_PREFIX = "hpo:claim:"
# study system attr prefix, + request key: one LLM ledger entry (outcome, tokens, cost, ...)
LEDGER_PREFIX = "hpo:ledger:"
# study system attr prefix, + prompt key: a cached LLM reply, replayed by a redone round
LLM_CACHE_PREFIX = "hpo:llm_cache:"
# study system attr prefix, + artifact id: True, that checkpoint file was removed (hpo.checkpoint)
CHECKPOINT_REMOVED_PREFIX = "hpo:checkpoint_removed:"
# study system attr prefix, + trial number: that trial's evaluation on the held-out test split
# (a system attr: a finished trial's own attrs can no longer change)
TEST_PREFIX = "hpo:test:"

# -- trial user attrs (hpo) ------------------------------------------------------------------

# trial user attr: {"host", "pid"} of the worker that ran this attempt (a retry has its own)
RUN_BY_ATTR = "hpo_run_by"
# trial user attr: "llm" or "rules", the analyst whose proposal this trial runs (absent: TPE)
SOURCE_ATTR = "hpo_source"
# trial user attr: the id of the analysis whose proposal this trial runs
ANALYSIS_ATTR = "hpo_analysis"
# trial user attr: the index (int) of that proposal in its analysis
PROPOSAL_ATTR = "hpo_proposal"
# trial user attr: {"artifact_id", "epoch", "trial", "saved_at", "bytes"} of its newest
# checkpoint, set after the upload finished (a retry inherits it)
CHECKPOINT_ATTR = "checkpoint"
# trial user attr: {metric: [value per epoch]}, every numeric metric the trainer computed
CURVE_ATTR = "curve"
# trial user attr: int, the epochs trained so far
EPOCHS_ATTR = "epochs"
# trial user attr: float, seconds the trial has trained
DURATION_ATTR = "duration_s"
# trial user attr: {"from_trial", "epoch", "at"} of the checkpoint a retry resumed from (None:
# not resumed; a retry's copy of its predecessor's is cleared)
RESUMED_ATTR = "resumed"
# trial user attr: str, why the trial was pruned (pruner, divergence, invalid combination)
PRUNE_REASON_ATTR = "prune_reason"
# trial user attr: str, why the trial failed, or why it was finished as FAIL without running
FAIL_REASON_ATTR = "fail_reason"
# trial user attr: int, the batch size after gradient accumulation
EFFECTIVE_BATCH_SIZE_ATTR = "effective_batch_size"
# trial user attr: int, the optimizer steps of the whole run (reports draw the lr schedule);
# reports also look for it in the study user attrs
OPTIMIZER_STEPS_ATTR = "optimizer_steps"
# trial user attr: int, training images (reports also look in the study user attrs)
N_TRAIN_ATTR = "n_train"
# trial or study user attr: int, an older name of N_TRAIN_ATTR; read only, hpo no longer writes it
TRAIN_SIZE_ATTR = "train_size"
# trial user attr: the unreadable image files the data set skipped (only when there were some)
SKIPPED_FILES_ATTR = "data_skipped_files"
# trial user attr: float, the trained model's batch-1 latency in ms (hpo.latency), and float,
# its parameters in millions; written when a study has these objectives (objective as a list)
LATENCY_ATTR = "latency_ms"
PARAMS_M_ATTR = "params_m"

# -- trial system attrs (hpo) ----------------------------------------------------------------

# trial system attr: True on a trial a worker created but never ran (it lost the race for the
# last budget slot, or was a duplicate of a retried create, or an unrun proposal); finished as
# FAIL (Optuna cannot delete a trial) and left out of reports, analyses and counts
LOST_RACE_ATTR = "hpo:lost_race"
# trial system attr: a uuid hex, the mark hpo.storage_retry puts on each trial it creates, to
# find it (or its duplicate) after a create whose reply was lost
CREATE_TOKEN_ATTR = "hpo:create_token"
# trial system attr: True on a proposal trial its run enqueued and did not run, finished as FAIL
# when the run ended (also marked LOST_RACE_ATTR)
UNRUN_PROPOSAL_ATTR = "hpo:unrun_proposal"
# trial system attr: float, Unix time (the worker's clock) of the trial's last heartbeat sent
# through the gRPC storage proxy, which carries no heartbeat of its own (hpo.proxy)
HEARTBEAT_ATTR = "hpo:heartbeat"

# -- keys Optuna and optuna-dashboard write, that hpo reads ----------------------------------

# trial system attr (Optuna, study.enqueue_trial): {param: value} a queued trial will run with
FIXED_PARAMS_ATTR = "fixed_params"
# trial system attr (Optuna's heartbeat retry callback): number of the trial this one retries
FAILED_TRIAL_ATTR = "failed_trial"
# trial system attr (Optuna's heartbeat retry callback): numbers of all the earlier attempts
RETRY_HISTORY_ATTR = "retry_history"
# trial system attr (Optuna): why Optuna failed the trial (e.g. the objective returned NaN)
OPTUNA_FAIL_REASON_ATTR = "fail_reason"
# trial or study system attr prefix (Optuna, upload_artifact), + artifact id: the artifact's
# metadata as JSON ("artifact_id", "filename", ...)
ARTIFACT_PREFIX = "artifacts:"
# study system attr prefix (optuna-dashboard notes): "dashboard:note_ver", "dashboard:note_str:<i>"
# for the study note, "dashboard:<trial id>:note_ver" / ":note_str:<i>" for a trial's note (keyed
# by the storage's internal trial id, which hpo migrate rewrites)
DASHBOARD_PREFIX = "dashboard:"

# -- inside stored values: the headings of hpo's sections of the study note ------------------

# the section the LLM-informed sampler rewrites after every analysis (hpo.sampler.notes)
SAMPLER_NOTE_HEADING = "## LLM-informed sampler: analyses"
# the section `hpo dashboard` adds for analyses the sampler's section does not show (hpo.dashboard)
DASHBOARD_NOTE_HEADING = "## Analyses (written by hpo)"
# the section `hpo dashboard` writes with the held-out test results (TEST_PREFIX)
TEST_NOTE_HEADING = "## Held-out test (written by hpo)"

# -- trial states ----------------------------------------------------------------------------

# trials that count against the budget (budget.n_trials: complete + pruned)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# trials that will not run again (FAIL too: a retry is a new trial)
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# the names of ENDED, as hpo.sampler.history's plain-data trials hold their state
ENDED_NAMES = tuple(s.name for s in ENDED)


# -- what hpo writes besides attrs -----------------------------------------------------------

def main_value(trial: FrozenTrial) -> float | None:
    """The trial's validation objective: its value, or its first value in a multi-objective
    study (the others are costs, :data:`LATENCY_ATTR`...); None when it has none.

        >>> import optuna
        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> _ = study.tell(study.ask(), [0.9, 3.5])
        >>> main_value(study.trials[0])
        0.9
    """
    return trial.values[0] if trial.values else None


def name_objectives(study: optuna.Study, names: list[str]) -> bool:
    """Name a multi-objective study's objectives (``study.set_metric_names``), in the values'
    order; a study that has names keeps them. Returns whether it wrote."""
    if study.metric_names is not None or len(study.directions) != len(names):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names))
    return True


def name_objective(study: optuna.Study, metric: str) -> bool:
    """Name the study's objective ``metric`` (``study.set_metric_names``), so optuna-dashboard
    shows it instead of "Objective 0"; a study that has names keeps them. Returns whether it
    wrote."""
    if study.metric_names is not None or len(study.directions) != 1:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])
    return True


# -- analyses: what an analyst wrote, as stored under ANALYSIS_PREFIX ------------------------
#
# One JSON object per analysis (format version ANALYSIS_VERSION; hpo.sampler.analysis explains
# each field and how a reply becomes one). Written by write_analysis, read by read_analyses:
# the sampler, the reports, the notes and the dashboard all go through these two.

ANALYSIS_VERSION = 1
# the training states a diagnosis names (anything else reads as "unknown")
STATES = ("underfitting", "overfitting", "diverging", "converging", "plateau", "range_edge",
          "unstable", "exploring", "unknown")
# what started an analysis round
TRIGGERS = ("every_n", "patience", "warm_start", "manual")
# longest stored text (an analysis stays a few kB: MySQL's TEXT column holds 64 kB)
MAX_STORED_TEXT = 1500


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Evidence(_Lenient):
    """A number taken from a trial or a curve, with what it shows.

        >>> Evidence(trial=7, metric="val_loss", value=0.41234, note="rising").text()
        'trial 7, val_loss = 0.4123: rising'
    """

    trial: int | None = None
    metric: str = ""
    value: float | str | None = None
    note: str = ""

    def text(self) -> str:
        """One line: where, what = value (4 significant digits), and the note."""
        where = f"trial {self.trial}" if self.trial is not None else ""
        value = f"{self.value:.4g}" if isinstance(self.value, float) else self.value
        what = " = ".join(str(x) for x in (self.metric, value) if x not in (None, ""))
        head = ", ".join(x for x in (where, what) if x)
        return f"{head}: {self.note}" if head and self.note else head or self.note


class Diagnosis(_Lenient):
    """One training state the analyst saw (:data:`STATES`), with its evidence."""

    state: str = "unknown"
    summary: str = ""
    evidence: list[Evidence] = Field(default_factory=list)

    @field_validator("state", mode="before")
    @classmethod
    def _known_state(cls, v: Any) -> str:
        squash = "".join(c for c in str(v or "unknown").lower() if c.isalpha())
        return next((s for s in STATES if s.replace("_", "") == squash), "unknown")


class Alternative(_Lenient):
    """Another set of values worth trying instead of the proposal's (checked like it)."""

    params: dict[str, Any] = Field(default_factory=dict)
    note: str = ""
    corrections: list[str] = Field(default_factory=list)


class Change(BaseModel):
    """One parameter a proposal changes from the best trial's value."""

    param: str
    old: Any = None
    new: Any = None
    change: Literal["increase", "decrease", "set", "same"] = "set"


class Proposal(_Lenient):
    """One proposed configuration; the sampler fills ``diff`` .. ``trial_number``.

        >>> Proposal(params={"lr": 0.01}, confidence="70%").confidence
        0.7
    """

    params: dict[str, Any] = Field(default_factory=dict)
    rationale: str = ""
    expected_effect: str = ""
    risk: str = ""
    confidence: float = 0.5
    alternatives: list[Alternative] = Field(default_factory=list)
    # filled by the sampler after checking the proposal against the space:
    diff: list[Change] = Field(default_factory=list)
    corrections: list[str] = Field(default_factory=list)
    status: str = "proposed"
    trial_number: int | None = None

    @field_validator("confidence", mode="before")
    @classmethod
    def _unit_interval(cls, v: Any) -> float:
        try:
            x = float(str(v).rstrip("%")) / (100 if str(v).endswith("%") else 1)
        except (TypeError, ValueError):
            return 0.5
        if math.isnan(x):
            return 0.5
        return min(max(x, 0.0), 1.0)

    @field_validator("alternatives", mode="before")
    @classmethod
    def _alternatives(cls, v: Any) -> list[Any]:
        items = v if isinstance(v, list) else [] if v is None else [v]
        # an Alternative (the rules analyst's) or a dict is data; anything else is a note
        return [a if isinstance(a, (dict, BaseModel)) else {"note": str(a)} for a in items]


class Reply(_Lenient):
    """What an analyst writes (the LLM's structured output); the sampler adds the rest."""

    summary: str = ""
    diagnosis: list[Diagnosis] = Field(default_factory=list)
    proposals: list[Proposal] = Field(default_factory=list)
    # filled by hpo.sampler.analysis.parse_reply_leniently: the malformed parts left out
    dropped: list[str] = Field(default_factory=list)

    @field_validator("diagnosis", "proposals", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> list[Any]:
        if v is None:
            return []
        return v if isinstance(v, list) else [v]


class Analysis(Reply):
    """A stored analysis: the reply, who wrote it, when, from what, and what became of it."""

    version: int = ANALYSIS_VERSION
    id: str
    trigger: str = "every_n"
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    analyst: str = "rules"
    model: str | None = None
    fallback_reason: str | None = None
    n_trials_seen: int = 0
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = Field(default_factory=dict)
    ledger: list[str] = Field(default_factory=list)


def _trim(x: Any) -> Any:
    if isinstance(x, str):
        return x if len(x) <= MAX_STORED_TEXT else x[: MAX_STORED_TEXT - 3] + "..."
    if isinstance(x, dict):
        return {k: _trim(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_trim(v) for v in x]
    return x


def write_analysis(study: optuna.Study, analysis: Analysis | dict[str, Any]) -> None:
    """Store (or replace) one analysis under :data:`ANALYSIS_PREFIX` + its id, every text cut
    to :data:`MAX_STORED_TEXT` characters."""
    raw = analysis.model_dump(mode="json") if isinstance(analysis, Analysis) else analysis
    set_study_system_attr(study, ANALYSIS_PREFIX + raw["id"], _trim(raw))


def stored_analyses(system_attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stored analysis as its JSON, oldest first (creation time, then id), from a
    study's system attrs (``hpo.optuna_private.study_system_attrs``)."""
    found = [v for k, v in system_attrs.items()
             if k.startswith(ANALYSIS_PREFIX) and isinstance(v, dict)]
    return sorted(found, key=lambda a: (str(a.get("created_at", "")), str(a.get("id", ""))))


def read_analyses(system_attrs: dict[str, Any]) -> list[Analysis]:
    """Every stored analysis as an :class:`Analysis`, oldest first; one that does not read as
    one (written by hand, or damaged) is left out with a warning, never fatal.

        >>> study = optuna.create_study()
        >>> write_analysis(study, Analysis(id="manual-0001", summary="lr too high",
        ...                                proposals=[Proposal(params={"lr": 0.01})]))
        >>> from hpo.optuna_private import study_system_attrs
        >>> [(a.id, a.proposals[0].params) for a in read_analyses(study_system_attrs(study))]
        [('manual-0001', {'lr': 0.01})]
    """
    out = []
    for raw in stored_analyses(system_attrs):
        try:
            out.append(Analysis.model_validate(raw))
        except ValidationError as exc:
            warnings.warn(f"analysis {raw.get('id')!r} left out: it does not read as an "
                          f"analysis ({exc.error_count()} errors)", stacklevel=2)
    return out


def proposal_trial_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials that ran an analyst's proposal (the rest were sampled by TPE or random)."""
    return {t.number for t in trials
            if t.user_attrs.get(SOURCE_ATTR) in ("llm", "rules") or ANALYSIS_ATTR in t.user_attrs}


def link_proposal_trials(analyses: list[Analysis], trials: list[FrozenTrial]) -> None:
    """Fill ``trial_number`` of proposals stored without it (analyses from before the sampler
    recorded it), from the trials' :data:`ANALYSIS_ATTR` and :data:`PROPOSAL_ATTR`."""
    by_key = {(t.user_attrs.get(ANALYSIS_ATTR), t.user_attrs.get(PROPOSAL_ATTR)): t.number
              for t in trials if ANALYSIS_ATTR in t.user_attrs}
    for a in analyses:
        for i, p in enumerate(a.proposals):
            if p.trial_number is None:
                p.trial_number = by_key.get((a.id, i))


# -- typed stored values ---------------------------------------------------------------------

class SkippedFile(BaseModel):
    """One image file the data set left out, and why (unreadable, not an image, ...)."""

    path: str
    reason: str


class DataFacts(BaseModel):
    """What a study trained on, stored under :data:`DATA_ATTR` when the study starts.

    Enough to preprocess an image the way training did (``image_size``, ``channels``, ``mean``,
    ``std`` of the normalisation applied to ``[0, 1]`` pixels) and to name a prediction
    (``classes``, index order). ``counts`` is ``{split: {class: images}}``; ``fingerprint`` a
    hash of the files (or of the generator's settings) that changes when the data does.

        >>> facts = DataFacts(classes=["ok", "scratch"], image_size=32, channels=3,
        ...                   mean=[0.5] * 3, std=[0.25] * 3, fingerprint="ab12")
        >>> DataFacts.model_validate_json(facts.model_dump_json()) == facts
        True
    """

    classes: list[str]
    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    fingerprint: str = ""
    skipped: list[SkippedFile] = Field(default_factory=list)
    source: str = ""  # the dataset config's name: digits, defects, folder
    # multi-task data: the regression head predicts ``(value - value_mean) / value_std``
    value_mean: float | None = None
    value_std: float | None = None


def write_data_facts(study: optuna.Study, facts: DataFacts) -> None:
    """Store ``facts`` in ``study`` (:data:`DATA_ATTR`)."""
    study.set_user_attr(DATA_ATTR, facts.model_dump(mode="json"))


def read_data_facts(study: optuna.Study | optuna.study.StudySummary | dict) -> DataFacts | None:
    """The stored :class:`DataFacts` of a study (or of its user attrs), None for a study from
    before hpo stored them.

        >>> study = optuna.create_study()
        >>> read_data_facts(study) is None
        True
        >>> write_data_facts(study, DataFacts(classes=["a", "b"], image_size=8, channels=1,
        ...                                   mean=[0.5], std=[0.5]))
        >>> read_data_facts(study).classes
        ['a', 'b']
    """
    attrs = study if isinstance(study, dict) else study.user_attrs
    raw = attrs.get(DATA_ATTR)
    return None if raw is None else DataFacts.model_validate(raw)


class ClassScore(BaseModel):
    """Precision, recall and F1 of one class on the test split; ``support``: its test images."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


class TestResult(BaseModel):
    """One trial's evaluation on the held-out test split, stored under :data:`TEST_PREFIX`.

    ``*_ci`` are 95 % percentile bootstrap intervals (``bootstrap`` resamples of the test
    images, ``seed``); ``confusion[t][p]`` counts test images of class ``classes[t]`` predicted
    as ``classes[p]``. ``mae``/``within_k`` (within ``±k``) only on multi-task data.

        >>> r = TestResult(trial=3, sizes={"train": 80, "val": 20, "test": 25},
        ...                classes=["a", "b"], accuracy=0.8, accuracy_ci=(0.64, 0.96),
        ...                macro_f1=0.79, macro_f1_ci=(0.6, 0.95), confusion=[[10, 2], [3, 10]],
        ...                checkpoint="ab12", checkpoint_epoch=2, evaluated_at="2026-01-01T00:00Z")
        >>> TestResult.model_validate_json(r.model_dump_json()) == r, r.line()
        (True, 'test accuracy 0.800 [0.640, 0.960], macro-F1 0.790 [0.600, 0.950] (25 images)')
    """

    __test__ = False  # not a pytest test class

    trial: int
    sizes: dict[str, int]  # images per split: train, val, test
    classes: list[str]
    accuracy: float
    accuracy_ci: tuple[float, float]
    macro_f1: float
    macro_f1_ci: tuple[float, float]
    per_class: list[ClassScore] = Field(default_factory=list)
    confusion: list[list[int]] = Field(default_factory=list)
    mae: float | None = None
    mae_ci: tuple[float, float] | None = None
    within_k: float | None = None
    k: float | None = None
    checkpoint: str  # the artifact id of the checkpoint evaluated
    checkpoint_epoch: int
    ema_used: bool = False
    val_value: float | None = None  # the trial's validation objective, for comparison
    bootstrap: int = 1000
    seed: int = 0
    evaluated_at: str

    def line(self) -> str:
        """The result in one line (terminal, compare, notes)."""
        text = (f"test accuracy {self.accuracy:.3f} [{self.accuracy_ci[0]:.3f}, "
                f"{self.accuracy_ci[1]:.3f}], macro-F1 {self.macro_f1:.3f} "
                f"[{self.macro_f1_ci[0]:.3f}, {self.macro_f1_ci[1]:.3f}]")
        if self.mae is not None:
            text += f", MAE {self.mae:.3g}"
            if self.mae_ci is not None:
                text += f" [{self.mae_ci[0]:.3g}, {self.mae_ci[1]:.3g}]"
            if self.within_k is not None:
                text += f", within ±{self.k:g} {self.within_k:.3f}"
        return text + f" ({self.sizes.get('test', 0)} images)"


def write_test_result(study: optuna.Study, result: TestResult) -> None:
    """Store ``result`` in ``study`` (:data:`TEST_PREFIX` + trial number)."""
    set_study_system_attr(study, TEST_PREFIX + str(result.trial), result.model_dump(mode="json"))


def read_test_results(system_attrs: dict) -> dict[int, TestResult]:
    """The stored :class:`TestResult` of each evaluated trial, by trial number, from a study's
    system attrs (``hpo.optuna_private.study_system_attrs``).

        >>> study = optuna.create_study()
        >>> from hpo.optuna_private import study_system_attrs
        >>> read_test_results(study_system_attrs(study))
        {}
    """
    out = {}
    for key, value in system_attrs.items():
        if key.startswith(TEST_PREFIX) and key[len(TEST_PREFIX):].isdigit():
            out[int(key[len(TEST_PREFIX):])] = TestResult.model_validate(value)
    return dict(sorted(out.items()))
