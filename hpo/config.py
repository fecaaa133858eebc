"""Typed, validated study configuration, loaded from ``studies/<name>.yaml``.

Every error names the file, the key, the bad value and what is allowed (:class:`ConfigError`,
exit code 2), and is raised before anything touches the storage::

    >>> cfg = load_study("smoke")          # studies/smoke.yaml + its search space
    >>> cfg.name, cfg.objective.metric
    ('smoke', 'val_accuracy')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hpo.errors import ConfigError
from hpo.sampler.settings import LLMTPEOptions
from hpo.space import SearchSpace, load_space
from hpo.training.config import TrainConfig
from hpo.yaml_io import config_error_from_pydantic, read_yaml  # both also imported from here

DEFAULT_STORAGE = "sqlite:///runs/hpo.db"
STUDIES_DIR = Path("studies")
SPACES_DIR = Path("search_spaces")
SHIPPED_DIR = Path(__file__).resolve().parents[1]  # the checkout: studies/, search_spaces/
DATASET_PATH_KEYS = ("root", "train_dir", "val_dir", "csv", "test_dir")

METRICS = {
    "val_accuracy": "maximize",
    "val_macro_f1": "maximize",
    "val_loss": "minimize",
    "train_loss": "minimize",
    "val_mae": "minimize",  # multi-task data only, as val_within_k
    "val_within_k": "maximize",
    "ema_val_accuracy": "maximize",  # needs train.ema_decay
    "ema_val_loss": "minimize",
    "weighted": None,  # sum of objective.weights[m] * m; needs an explicit direction
}
MULTITASK_METRICS = {"val_mae", "val_within_k"}
# what a trial costs, measured once after training: objectives beside the validation metric
COST_METRICS = {
    "latency_ms": "minimize",  # batch 1, this machine, median of warm runs (hpo.latency)
    "params_m": "minimize",  # parameters in millions
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetConfig(_Strict):
    """Which dataset, and its options. ``digits``: scikit-learn's digits. ``defects``: the
    generated inspection set (``n_per_class``; ``multitask`` adds a severity value per image).
    ``folder``: user images, ``root/<class>/<image>`` split stratified, or ``train_dir`` and
    ``val_dir``; ``csv`` (file,class,value beside the images) makes it multi-task.

    A held-out test split, never seen by training, pruning, the sampler or the analysts:
    ``test_fraction`` (stratified, carved out before the train/validation split, the same for
    the same ``seed``) or, for a folder, ``test_dir`` (``test_dir/<class>/<image>``).

    ``pixel_noise``: Gaussian noise of that sigma added once to every image of every split
    (:mod:`hpo.data.noise`, drawn from ``seed``), a harder version of the task."""

    name: Literal["digits", "defects", "folder"] = "digits"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    n_per_class: int = Field(120, ge=4, description="defects: images per class")
    multitask: bool = Field(False, description="defects: add the severity regression target")
    root: str | None = Field(None, description="folder: one folder, split with val_fraction")
    train_dir: str | None = Field(None, description="folder: train split (with val_dir)")
    val_dir: str | None = Field(None, description="folder: validation split (with train_dir)")
    csv: str | None = Field(None, description="folder: labels CSV (file,class,value)")
    test_fraction: float | None = Field(None, description="held-out test share, in (0, 0.5]")
    test_dir: str | None = Field(None, description="folder: held-out test split")
    pixel_noise: float = Field(0.0, ge=0, le=1, description="Gaussian noise sigma added once to "
                               "every image (drawn from seed): a harder task")

    @field_validator("test_fraction")
    @classmethod
    def _test_share(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value <= 0.5:
            raise PydanticCustomError("test_fraction", "a number > 0 and <= 0.5 (the share of "
                                      "each class held out for the final test)")
        return value

    @model_validator(mode="after")
    def _options_fit_the_name(self) -> DatasetConfig:
        paths = {"root": self.root, "train_dir": self.train_dir, "val_dir": self.val_dir,
                 "csv": self.csv, "test_dir": self.test_dir}
        if self.name != "folder":
            given = [k for k, v in paths.items() if v is not None]
            if given:
                raise ValueError(f"{given[0]} is an option of name: folder, not {self.name}")
        elif (self.root is None) == (self.train_dir is None and self.val_dir is None) or (
                (self.train_dir is None) != (self.val_dir is None)):
            raise ValueError("folder needs either root, or both train_dir and val_dir")
        if self.multitask and self.name != "defects":
            raise ValueError("multitask is an option of defects (a folder is multi-task by csv)")
        if self.test_fraction is not None and self.test_dir is not None:
            raise ValueError("give either test_fraction or test_dir, not both")
        if self.test_fraction is not None and self.train_dir is not None:
            raise ValueError("test_fraction splits dataset.root; with train_dir and val_dir "
                             "give test_dir")
        return self

    @property
    def has_test(self) -> bool:
        """Whether this dataset holds out a test split."""
        return self.test_fraction is not None or self.test_dir is not None

    @property
    def is_multitask(self) -> bool:
        """Whether this dataset carries a regression value per image."""
        return self.multitask or self.csv is not None


class ModelConfig(_Strict):
    """A timm model by name. ``head_dropout`` and ``drop_path_rate`` may also be searched."""

    name: str = "mobilenetv3_small_050"
    image_size: int = Field(32, ge=8, le=1024)
    in_chans: int = Field(3, ge=1)
    pretrained: bool | str = Field(False, description="true: timm's weights (Hugging Face "
                                   "Hub or its cache); a path: a local weights file "
                                   "(.safetensors, .pth, a timm checkpoint), classifier reset")
    head_dropout: float = Field(0.0, ge=0, lt=1)
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="stochastic depth, where supported")


class CostObjective(_Strict):
    """A second (third) objective of a multi-objective study: what the trained model costs."""

    metric: Literal["latency_ms", "params_m"]
    direction: Literal["maximize", "minimize"] = "minimize"


class SearchedModelName(_Strict):
    """A search-space ``model_name``: timm models to choose between (checked against timm's
    registry when the study starts, :func:`hpo.models.check_model_name`)."""

    model_name: str


class ObjectiveConfig(_Strict):
    """The metric a trial reports every epoch and the direction of the study.

    A list of ``{metric, direction}`` makes the study multi-objective: one validation metric
    (the one reported every epoch) and the costs in :data:`COST_METRICS`; it is held as the
    validation metric with ``costs``, and trial values are ``(metric, *costs)`` in that order.

        >>> o = ObjectiveConfig.model_validate([{"metric": "latency_ms"},
        ...                                     {"metric": "val_accuracy"}])
        >>> o.metric, [(c.metric, c.direction) for c in o.costs]
        ('val_accuracy', [('latency_ms', 'minimize')])
        >>> o.model_dump()["costs"], "costs" in ObjectiveConfig().model_dump()
        ([{'metric': 'latency_ms', 'direction': 'minimize'}], False)
    """

    metric: str = "val_accuracy"
    direction: Literal["maximize", "minimize"] | None = None
    weights: dict[str, float] = Field(default_factory=dict, description="metric: weighted")
    costs: list[CostObjective] = Field(default_factory=list, description="more objectives: "
                                       "latency_ms, params_m (the list form of objective)")

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        """``[{metric, direction}, ...]``: one validation metric plus costs."""
        if not isinstance(data, list):
            return data
        allowed = (f"a list of {{metric, direction}} with exactly one of {sorted(METRICS)} "
                   f"and any of {sorted(COST_METRICS)}, each once")
        main: list[dict[str, Any]] = []
        costs: list[dict[str, Any]] = []
        for i, entry in enumerate(data):
            metric = entry.get("metric") if isinstance(entry, dict) else None
            if metric in COST_METRICS:
                costs.append(entry)
            elif metric in METRICS:
                main.append(entry)
            else:
                raise PydanticCustomError("objective_entry", "entry {i} ({entry}): {allowed}",
                                          {"i": i, "entry": repr(entry), "allowed": allowed})
        names = [c["metric"] for c in costs]
        if len(main) != 1 or len(set(names)) != len(names):
            raise PydanticCustomError("objective_list", "{allowed}; got {got}",
                                      {"allowed": allowed, "got": [e.get("metric") for e in data]})
        return {**main[0], "costs": costs}

    @model_serializer(mode="wrap")
    def _without_empty_costs(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if not self.costs:  # a single-objective study's stored config is as before
            out.pop("costs", None)
        return out

    @model_validator(mode="after")
    def _known_metric(self) -> ObjectiveConfig:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; allowed: {sorted(METRICS)}")
        if self.metric == "weighted":
            if not self.weights or self.direction is None:
                raise ValueError("metric: weighted needs weights {metric: w} and a direction")
            bad = sorted(set(self.weights) - set(METRICS) | {"weighted"} & set(self.weights))
            if bad:
                raise ValueError(f"weights name {bad[0]!r}; allowed: {sorted(METRICS)[:-1]}")
        if self.direction is None:
            self.direction = METRICS[self.metric]  # type: ignore[assignment]
        return self

    @property
    def directions(self) -> list[str]:
        """The study's directions: the validation metric's, then each cost's."""
        return [str(self.direction), *(c.direction for c in self.costs)]

    @property
    def names(self) -> list[str]:
        """The study's metric names (``study.set_metric_names``), in the values' order."""
        return [self.metric, *(c.metric for c in self.costs)]

    def metrics(self) -> list[str]:
        """The epoch metrics this objective reads."""
        return list(self.weights) if self.metric == "weighted" else [self.metric]

    def value(self, result: Any) -> float:
        """The objective of one epoch's result (an ``EpochResult``)."""
        if self.metric != "weighted":
            return float(getattr(result, self.metric))
        return sum(w * float(getattr(result, m)) for m, w in self.weights.items())


class BudgetConfig(_Strict):
    """How much to spend: finished trials (complete + pruned), epochs per trial, seconds."""

    n_trials: int = Field(20, ge=1)
    max_epochs: int = Field(10, ge=1)
    timeout: float | None = Field(None, gt=0, description="seconds for this run of the study")


class SamplerConfig(LLMTPEOptions):
    """Which sampler proposes parameters (``nsga2``: Optuna's NSGA-II, for several objectives;
    TPE handles several too); ``llm-tpe`` adds analysts (options in
    :mod:`hpo.sampler.settings`: every_n_trials, patience, warm_start_from, max_proposal_share,
    analyst, llm)."""

    type: Literal["tpe", "random", "llm-tpe", "nsga2"] = "tpe"
    n_startup_trials: int = Field(10, ge=0, description="random trials before TPE models")


class PrunerConfig(_Strict):
    """Which Optuna pruner stops unpromising trials, with its options."""

    type: Literal["none", "median", "hyperband", "successive_halving"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="median: trials before pruning starts")
    n_warmup_steps: int = Field(1, ge=0, description="median: epochs before a trial can be pruned")
    min_resource: int | Literal["auto"] = Field(1, description="hyperband/successive_halving")
    reduction_factor: int = Field(3, ge=2, description="hyperband/successive_halving")


class CheckpointConfig(_Strict):
    """How often a trial checkpoints, and how many finished trials keep theirs (issue 5)."""

    every_n_epochs: int = Field(1, ge=1, description="upload a checkpoint every N epochs (and at the last)")
    keep_best_k: int = Field(3, ge=0, description="finished trials whose final checkpoint is kept")


class WorkersConfig(_Strict):
    """Dead-trial detection: heartbeats in the RDB storage, and bounded retries of stale trials."""

    heartbeat_interval: int = Field(30, ge=1, description="seconds between a trial's heartbeats")
    grace_period: int = Field(90, ge=2, description="seconds without heartbeat before a trial is dead")
    max_retries: int = Field(3, ge=0, description="retries of one trial (kill, preemption, Ctrl-C)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process; null: "
                                "the cores shared by the hpo processes training here (hpo.threads)")
    outage_limit_s: int = Field(300, ge=1, description="seconds a worker waits out an unreachable "
                                "storage (PostgreSQL/MySQL) before it exits 75, leaving its "
                                "trial for retry (hpo.storage_retry)")

    @model_validator(mode="after")
    def _grace_after_heartbeat(self) -> WorkersConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must exceed "
                             f"heartbeat_interval ({self.heartbeat_interval})")
        return self


class ArtifactsConfig(_Strict):
    """Where checkpoints go: a folder (shared for many machines) or an S3-compatible bucket.

    Unset: ``artifacts/`` next to the SQLite file (``--artifacts`` / ``$HPO_ARTIFACTS`` override).
    """

    path: str | None = Field(None, description="folder, or s3://BUCKET for Boto3ArtifactStore")
    s3_endpoint: str | None = Field(None, description="S3-compatible endpoint URL (MinIO, R2...)")


class StudyConfig(_Strict):
    """One study file, with its search space resolved (:func:`load_study` reads both).

    Example:

        >>> cfg = StudyConfig.model_validate({"name": "demo", "search_space": "smoke",
        ...                                   "train": {"batch_size": 32},
        ...                                   "budget": {"n_trials": 5, "max_epochs": 2}})
        >>> cfg.objective.metric, cfg.sampler.type, cfg.budget.n_trials
        ('val_accuracy', 'tpe', 5)
        >>> cfg.train_config({"lr": 0.01}).batch_size   # fixed values + one trial's params
        32

    Args:
        name: The study's name in the storage (default: the file's stem).
        description: What the study is for (reports, the LLM analyst's prompt).
        seed: Seed of the sampler, the data split and each trial's training.
        dataset: Which data (``digits``, ``defects``, ``folder``), splits, held-out test.
        model: timm model name, image size, pretrained weights, head.
        search_space: The file in ``search_spaces/`` (or a path) with the searched params.
        train: Fixed :class:`~hpo.training.TrainConfig` values for every trial.
        objective: The metric reported each epoch and its direction.
        budget: Finished trials to reach, epochs per trial, time limit.
        sampler: ``tpe``, ``random`` or ``llm-tpe`` (with its analysts' settings).
        pruner: ``none``, ``median``, ``hyperband`` or ``successive_halving``.
    """

    name: str
    description: str = ""
    seed: int = 0
    dataset: DatasetConfig = DatasetConfig()
    model: ModelConfig = ModelConfig()
    search_space: str
    train: dict[str, Any] = Field(default_factory=dict, description="fixed TrainConfig values")
    objective: ObjectiveConfig = ObjectiveConfig()
    budget: BudgetConfig = BudgetConfig()
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    workers: WorkersConfig = WorkersConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()
    space: SearchSpace | None = Field(None, exclude=True)
    space_file: str | None = Field(None, exclude=True, description="where `space` was read")
    study_file: str | None = Field(None, exclude=True, description="the study file read")

    @model_validator(mode="after")
    def _objective_fits_dataset(self) -> StudyConfig:
        needs = MULTITASK_METRICS & set(self.objective.metrics())
        if needs and not self.dataset.is_multitask:
            # a ValidationError at the key itself, so the ConfigError names objective.metric (or
            # objective.weights) and the metric, not the whole config as "(top level)"
            metric = min(needs)
            weighted = self.objective.metric == "weighted"
            classification = ", ".join(m for m in METRICS
                                       if m not in MULTITASK_METRICS and m != "weighted")
            what = "metrics" if weighted else "a metric"
            allowed = (f"{what} of classification data ({classification}), or multi-task data "
                       f"for {metric} (dataset: defects with multitask: true, or folder with csv)")
            raise ValidationError.from_exception_data(type(self).__name__, [{
                "type": PydanticCustomError("objective_needs_multitask", allowed),
                "loc": ("objective", "weights" if weighted else "metric"),
                "input": metric}])
        return self

    @model_validator(mode="after")
    def _test_keeps_a_checkpoint(self) -> StudyConfig:
        if self.dataset.has_test and self.checkpoint.keep_best_k < 1:
            raise ValidationError.from_exception_data(type(self).__name__, [{
                "type": PydanticCustomError(
                    "test_needs_checkpoint", "an integer >= 1 with a held-out test split "
                    "(the best trial is evaluated on it from its final checkpoint)"),
                "loc": ("checkpoint", "keep_best_k"), "input": self.checkpoint.keep_best_k}])
        return self

    @property
    def is_multi_objective(self) -> bool:
        """Whether ``objective`` is a list (the validation metric plus costs)."""
        return bool(self.objective.costs)

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """``(metric, direction)`` of each objective, in the order of a trial's values."""
        return list(zip(self.objective.names, self.objective.directions))

    @property
    def source(self) -> str:
        """The study file to name in errors (the path the user gave)."""
        return self.study_file or f"studies/{self.name}.yaml"

    def train_config(self, params: dict[str, Any] | None = None) -> TrainConfig:
        """The fixed defaults, overridden by the trial's ``params`` that are training knobs."""
        values = {**self.train, "epochs": self.budget.max_epochs, "seed": self.seed}
        values.update({k: v for k, v in (params or {}).items() if k in TrainConfig.model_fields})
        return TrainConfig(**values)

    def model_config_for(self, params: dict[str, Any] | None = None) -> ModelConfig:
        """The model section, overridden by the trial's ``params`` that are model knobs (a
        searched ``model_name`` is ``model.name``: accuracy against latency)."""
        params = params or {}
        update = {k: v for k, v in params.items() if k in ModelConfig.model_fields}
        if "model_name" in params:
            update["name"] = params["model_name"]
        return self.model.model_copy(update=update)

    def defaults(self) -> dict[str, Any]:
        """The value each searched parameter would take with no search (for diffs in reports)."""
        train = self.train_config().model_dump()
        model = self.model.model_dump()
        names = self.space.names() if self.space else []
        return {n: train.get(n, model.get(n)) for n in names}


def study_path(name_or_path: str, studies_dir: Path | None = None) -> Path:
    """``mobilenet`` -> ``studies/mobilenet.yaml`` (in the current folder, else the shipped one);
    an explicit ``.yaml`` path is kept as is.

        >>> study_path("smoke").name, study_path("my/own.yaml")
        ('smoke.yaml', PosixPath('my/own.yaml'))
    """
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        return Path(name_or_path)
    local = (studies_dir or STUDIES_DIR) / f"{name_or_path}.yaml"
    shipped = SHIPPED_DIR / STUDIES_DIR / f"{name_or_path}.yaml"
    return shipped if studies_dir is None and not local.is_file() and shipped.is_file() else local


def resolve_space_file(search_space: str, study_file: Path) -> Path:
    """The search-space file a study names, found in this order:

    - a path (``my_space.yaml``, ``spaces/a.yaml``): absolute as is, relative to the study
      file's own folder;
    - a bare name (``mobilenet``): ``search_spaces/NAME.yaml`` in the study file's folder, then
      in its parent folder (the ``studies/`` + ``search_spaces/`` layout);
    - either way, when none of these exists: the shipped ``search_spaces/`` by name.

    A ConfigError naming the study file and every place looked in when none exists.

        >>> resolve_space_file("smoke", Path("/elsewhere/study.yaml")).name
        'smoke.yaml'
    """
    given = Path(search_space)
    here = study_file.parent
    if given.suffix or len(given.parts) > 1:
        name = given.stem
        candidates = [given if given.is_absolute() else here / given]
    else:
        name = search_space
        candidates = [here / SPACES_DIR / f"{name}.yaml", here.parent / SPACES_DIR / f"{name}.yaml"]
    candidates.append(SHIPPED_DIR / SPACES_DIR / f"{name}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ConfigError(study_file, "search_space", search_space,
                      f"a search-space file; looked in: {looked}")


def _resolve_dataset_paths(dataset: DatasetConfig, study_file: Path) -> DatasetConfig:
    """Relative ``root``/``train_dir``/``val_dir``/``csv`` are relative to the study file's
    folder (not to where hpo is started); they become absolute."""
    here = study_file.parent.resolve()
    update = {key: str(here / value) for key in DATASET_PATH_KEYS
              if (value := getattr(dataset, key)) is not None and not Path(value).is_absolute()}
    return dataset.model_copy(update=update)


def _resolve_pretrained_file(model: ModelConfig, study_file: Path) -> ModelConfig:
    """A ``model.pretrained`` path, relative to the study file's folder, made absolute; a
    ConfigError when no such file exists."""
    if not isinstance(model.pretrained, str):
        return model
    file = Path(model.pretrained).expanduser()
    file = file if file.is_absolute() else study_file.parent.resolve() / file
    if not file.is_file():
        raise ConfigError(study_file, "model.pretrained", model.pretrained,
                          f"true, false, or an existing weights file (.safetensors, .pth, a "
                          f"timm checkpoint); {file} does not exist")
    return model.model_copy(update={"pretrained": str(file)})


def load_study(name_or_path: str, studies_dir: Path | None = None) -> StudyConfig:
    """Load and validate a study file and its search space (paths: :func:`resolve_space_file`,
    :func:`_resolve_dataset_paths`); a bad value is a ConfigError naming file, key and the
    allowed values.

    Example:

        >>> cfg = load_study("smoke")            # studies/smoke.yaml + search_spaces/smoke.yaml
        >>> cfg.name, cfg.model.image_size, cfg.budget.n_trials
        ('smoke', 16, 3)
        >>> cfg.space.names() == list(cfg.space.params)
        True

    Args:
        name_or_path: A study name (``studies/NAME.yaml``) or the path of a study file.
        studies_dir: Where names are looked up (default: ``studies/``).
    """
    path = study_path(name_or_path, studies_dir)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    if "space" in data:
        raise ConfigError(path, "space", "...", "search_space: <file name in search_spaces/>")
    try:
        cfg = StudyConfig(**data)
    except ValidationError as exc:
        raise config_error_from_pydantic(path, exc) from None
    try:
        cfg.train_config()
    except ValidationError as exc:
        raise config_error_from_pydantic(path, exc, prefix="train") from None
    cfg.study_file = str(path)
    cfg.dataset = _resolve_dataset_paths(cfg.dataset, path)
    cfg.model = _resolve_pretrained_file(cfg.model, path)
    space_file = resolve_space_file(cfg.search_space, path)
    cfg.space = load_space(space_file, allowed_names=_searchable_names())
    cfg.space_file = str(space_file)
    _check_ema_objective(cfg, path)
    return cfg


def _check_ema_objective(cfg: StudyConfig, path: Path) -> None:
    """An ``ema_*`` objective needs EMA weights in every trial: a fixed ``train.ema_decay``, or a
    searched one that can never be null."""
    if not any(m.startswith("ema_") for m in cfg.objective.metrics()):
        return
    searched = cfg.space.params.get("ema_decay") if cfg.space else None
    if searched is None and cfg.train.get("ema_decay") is None:
        raise ConfigError(path, "train.ema_decay", None,
                          f"a decay in (0, 1) (objective {cfg.objective.metric} reads EMA weights)")
    if searched is not None and None in (getattr(searched, "choices", None) or []):
        raise ConfigError(cfg.space_file or cfg.search_space, "params.ema_decay.choices", None,
                          f"decays in (0, 1) only (objective {cfg.objective.metric} reads EMA "
                          "weights)")


def _searchable_names() -> dict[str, type[BaseModel]]:
    names: dict[str, type[BaseModel]] = {n: TrainConfig for n in TrainConfig.model_fields}
    names.update({n: ModelConfig for n in ("head_dropout", "drop_path_rate")})
    names["model_name"] = SearchedModelName
    names.pop("epochs")
    names.pop("seed")
    return names
