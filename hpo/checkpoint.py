"""Trial checkpoints in an Optuna artifact store: save every N epochs, resume a retried trial.

A checkpoint is one ``torch.save`` file (the Trainer's state: model, optimizer, scheduler, scaler,
EMA, epoch, RNG states, per-epoch history; plus the trial's params and reported values) uploaded
with :func:`optuna.artifacts.upload_artifact`, so optuna-dashboard lists it on the trial. The
trial's user attr ``checkpoint`` points at the newest one *after* its upload has finished.

A retried trial (heartbeat-stale or interrupted) is a new WAITING trial with the same params and
a copy of the failed trial's user attrs, so it inherits that pointer; :meth:`Checkpoints.load`
follows it, or walks the retry chain back when the newest file is gone. Finished trials keep
their final checkpoint only when they are among the best ``keep_best_k`` (:meth:`prune`).

Where: ``--artifacts`` > ``$HPO_ARTIFACTS`` > the study's ``artifacts.path`` > the location
recorded in the study by its first run > ``artifacts/`` next to the SQLite file. A server
storage (PostgreSQL/MySQL) with no location set falls back to ``runs/artifacts`` with a warning:
it resumes only on the same machine; give a shared folder or ``s3://BUCKET`` for many.

    >>> import tempfile, optuna
    >>> from hpo.config import CheckpointConfig
    >>> folder = tempfile.TemporaryDirectory()       # e.g. runs/artifacts
    >>> ckpt = Checkpoints(open_artifact_store(folder.name), folder.name,
    ...                    CheckpointConfig(every_n_epochs=2))
    >>> [epoch for epoch in range(1, 6) if ckpt.due(epoch, last_epoch=5)]
    [2, 4, 5]
    >>> trial = optuna.create_study().ask()
    >>> artifact_id = ckpt.save(trial, {"epoch": 2, "params": trial.params})
    >>> trial.user_attrs["checkpoint"]["epoch"], trial.user_attrs["checkpoint"]["trial"]
    (2, 0)
    >>> folder.cleanup()
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from hpo.artifacts import absolute, choose_artifacts, open_artifact_store
from hpo.config import ArtifactsConfig, CheckpointConfig
from hpo.errors import ConfigError
from hpo.optuna_private import set_study_system_attr, storage_of, study_system_attrs, trial_id_of
from hpo.record import (
    ARTIFACT_PREFIX,
    ARTIFACTS_ATTR,
    CHECKPOINT_ATTR,
    CHECKPOINT_REMOVED_PREFIX,
)
from hpo.signals import critical

log = logging.getLogger("hpo.checkpoint")

FILE_PREFIX = "checkpoint-"
@dataclass
class Resumed:
    """What :meth:`Checkpoints.load` found: the state and where it came from."""

    state: dict[str, Any]
    from_trial: int
    epoch: int


class Checkpoints:
    """Saves, finds and prunes trial checkpoints in one artifact store."""

    def __init__(self, store: Any, location: str, cfg: CheckpointConfig | None = None) -> None:
        self.store = store
        self.location = location
        self.cfg = cfg or CheckpointConfig()
        self.source = "given"  # where the location came from (for the terminal)

    @classmethod
    def for_study(cls, storage_url: str, artifacts: ArtifactsConfig, cfg: CheckpointConfig,
                  cli_value: str | None = None, study: optuna.Study | None = None
                  ) -> Checkpoints:
        """The study's store (:func:`choose_artifacts`). The first run records the location in
        the study, so a worker given none uses the same store; a recorded folder this machine
        cannot see is a ConfigError (a retried trial would silently start from epoch 1)."""
        recorded = study.user_attrs.get(ARTIFACTS_ATTR) if study is not None else None
        location, source = choose_artifacts(storage_url, artifacts, cli_value, recorded)
        if source == "the study record" and not location.startswith("s3://") \
                and not Path(location).is_dir():
            raise ConfigError(f"study {study.study_name!r}", ARTIFACTS_ATTR, location,
                              "a checkpoint folder this machine can reach (mount it, or pass "
                              "--artifacts / $HPO_ARTIFACTS to use another store; trials then "
                              "resume only from checkpoints found there)")
        ckpt = cls(open_artifact_store(location, artifacts.s3_endpoint), location, cfg)
        ckpt.source = source
        if study is not None and recorded is None:
            study.set_user_attr(ARTIFACTS_ATTR, absolute(location))
        return ckpt

    def due(self, epoch: int, last_epoch: int) -> bool:
        """Whether ``epoch`` gets a checkpoint (every N epochs, and always the last one)."""
        return epoch % self.cfg.every_n_epochs == 0 or epoch >= last_epoch

    # -- saving ---------------------------------------------------------------------------

    def save(self, trial: optuna.Trial, state: dict[str, Any]) -> str:
        """Upload ``state`` as the trial's newest checkpoint and drop the one it replaces.

        Upload and pointer update run as one step for signals (:func:`hpo.signals.critical`).
        """
        epoch = int(state["epoch"])
        with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
            file = Path(tmp) / f"{FILE_PREFIX}t{trial.number}-e{epoch}.pt"
            torch.save(state, file)
            with critical():
                previous = trial.user_attrs.get(CHECKPOINT_ATTR)
                artifact_id = upload_artifact(artifact_store=self.store, file_path=str(file),
                                              study_or_trial=trial,
                                              mimetype="application/octet-stream")
                trial.set_user_attr(CHECKPOINT_ATTR, {
                    "artifact_id": artifact_id, "epoch": epoch, "trial": trial.number,
                    "saved_at": time.time(), "bytes": file.stat().st_size,
                })
        # a predecessor's file (retry chain) is removed by prune() once no trial needs it
        if previous and previous.get("trial") == trial.number:
            self._remove(trial.study, previous["artifact_id"])
        return artifact_id

    # -- resuming -------------------------------------------------------------------------

    def load(self, trial: optuna.Trial) -> Resumed | None:
        """The newest checkpoint of the trial this one retries (following the chain), else None."""
        frozen = storage_of(trial.study).get_trial(trial_id_of(trial))
        if RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen) is None:
            return None
        candidates = [frozen.user_attrs.get(CHECKPOINT_ATTR)]
        chain = RetryHeartbeatStaleTrialCallback.retry_history(frozen)
        if chain:
            by_number = {t.number: t for t in trial.study.get_trials(deepcopy=False)}
            candidates += [by_number[n].user_attrs.get(CHECKPOINT_ATTR)
                           for n in reversed(chain) if n in by_number]
        seen: set[str] = set()
        for pointer in candidates:
            if not pointer or pointer["artifact_id"] in seen:
                continue
            seen.add(pointer["artifact_id"])
            state = self._download(pointer["artifact_id"])
            if state is None:
                log.warning("checkpoint %s of trial %s is missing from %s; trying older ones",
                            pointer["artifact_id"], pointer.get("trial"), self.location)
                continue
            if state.get("params") != frozen.params:
                log.warning("checkpoint of trial %s has other params; not resuming from it",
                            pointer.get("trial"))
                continue
            return Resumed(state, int(pointer.get("trial", -1)), int(state["epoch"]))
        return None

    def final_state(self, trial: FrozenTrial) -> dict[str, Any] | None:
        """The state in ``trial``'s newest checkpoint (its final one once it finished), None when
        it has none or the file is gone (:meth:`prune` keeps the best ``keep_best_k``)."""
        pointer = trial.user_attrs.get(CHECKPOINT_ATTR)
        return self._download(pointer["artifact_id"]) if pointer else None

    def _download(self, artifact_id: str) -> dict[str, Any] | None:
        with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
            file = Path(tmp) / "checkpoint.pt"
            try:
                download_artifact(artifact_store=self.store, file_path=str(file),
                                  artifact_id=artifact_id)
                return torch.load(file, map_location="cpu", weights_only=False)
            except (ArtifactNotFound, FileNotFoundError, EOFError, RuntimeError) as exc:
                log.debug("cannot read checkpoint %s: %s", artifact_id, exc)
                return None

    # -- disk budget ----------------------------------------------------------------------

    def prune(self, study: optuna.Study, fail_grace_s: float = 300.0) -> list[str]:
        """Remove checkpoints no trial needs: keep the best ``keep_best_k`` finished trials',
        and any a running or waiting trial points at (a retry resumes from those). A FAIL trial's
        files wait ``fail_grace_s`` so the retry created just after it can claim them.
        Returns the removed artifact ids.
        """
        trials = study.get_trials(deepcopy=False)
        system = study_system_attrs(study)
        removed = {k[len(CHECKPOINT_REMOVED_PREFIX):] for k in system
                   if k.startswith(CHECKPOINT_REMOVED_PREFIX)}
        keep: set[str] = set()
        for t in trials:
            pointer = t.user_attrs.get(CHECKPOINT_ATTR)
            if pointer and t.state in (TrialState.RUNNING, TrialState.WAITING):
                keep.add(pointer["artifact_id"])
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
        # several objectives: ranked by the first (the validation metric), and the Pareto
        # front kept too (`hpo export` picks from it)
        complete.sort(key=lambda t: t.values[0], reverse=study.directions[0].name == "MAXIMIZE")
        front = study.best_trials if len(study.directions) > 1 else []
        for t in complete[: self.cfg.keep_best_k] + front:
            if t.user_attrs.get(CHECKPOINT_ATTR):
                keep.add(t.user_attrs[CHECKPOINT_ATTR]["artifact_id"])
        recent = datetime.now() - timedelta(seconds=fail_grace_s)
        gone = []
        for t in trials:
            if not t.state.is_finished():
                continue
            if t.state == TrialState.FAIL and (t.datetime_complete or datetime.now()) > recent:
                continue
            for artifact_id in checkpoint_ids(t):
                if artifact_id not in keep and artifact_id not in removed:
                    self._remove(study, artifact_id)
                    gone.append(artifact_id)
        return gone

    def _remove(self, study: optuna.Study, artifact_id: str) -> None:
        try:
            self.store.remove(artifact_id)
        except ArtifactNotFound:
            pass
        set_study_system_attr(study, CHECKPOINT_REMOVED_PREFIX + artifact_id, True)


def checkpoint_ids(trial: FrozenTrial) -> list[str]:
    """Artifact ids of the checkpoints uploaded by ``trial`` (its artifact system attrs)."""
    ids = []
    for key, value in trial.system_attrs.items():
        if key.startswith(ARTIFACT_PREFIX):
            meta = json.loads(value) if isinstance(value, str) else value
            if str(meta.get("filename", "")).startswith(FILE_PREFIX):
                ids.append(meta["artifact_id"])
    return ids
