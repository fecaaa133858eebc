"""Where a study's checkpoints live: a folder or ``s3://BUCKET``, chosen the same way by every
command that trains (:mod:`hpo.checkpoint`) or shows them (``hpo dashboard``). No torch here.

The order, first given wins: ``--artifacts`` > ``$HPO_ARTIFACTS`` > the study file's
``artifacts.path`` > the location recorded in the study by its first run
(:data:`~hpo.record.ARTIFACTS_ATTR`) > ``artifacts/`` next to the SQLite file. A server storage
(PostgreSQL/MySQL, ``grpc://``) with none of them falls back to :data:`SERVER_FALLBACK` with a
warning: it resumes only on the same machine.

    >>> choose_artifacts("sqlite:///runs/hpo.db")
    ('runs/artifacts', 'next to the SQLite file')
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.artifacts import FileSystemArtifactStore

from hpo.storage import sqlite_path

if TYPE_CHECKING:
    from hpo.config import ArtifactsConfig

log = logging.getLogger("hpo.checkpoint")

SERVER_FALLBACK = "runs/artifacts"


def choose_artifacts(storage_url: str, cfg: ArtifactsConfig | None = None,
                     cli_value: str | None = None, recorded: str | None = None
                     ) -> tuple[str, str]:
    """The artifact location and where it came from: ``--artifacts``, ``$HPO_ARTIFACTS``, the
    study file's ``artifacts.path``, the location ``recorded`` in the study when it first
    stored a checkpoint (:data:`ARTIFACTS_ATTR`), the folder next to the SQLite file, or the
    server fallback.

        >>> choose_artifacts("sqlite:///runs/hpo.db", recorded="/shared/ckpt")
        ('/shared/ckpt', 'the study record')
    """
    for location, source in ((cli_value, "--artifacts"),
                             (os.environ.get("HPO_ARTIFACTS"), "$HPO_ARTIFACTS"),
                             (cfg.path if cfg else None, "artifacts.path"),
                             (recorded, "the study record")):
        if location:
            return location, source
    db = sqlite_path(storage_url)
    if db is not None and db.name != ":memory:":
        return str(db.parent / "artifacts"), "next to the SQLite file"
    log.warning("no artifact store given for a server storage: checkpoints go to %s on this "
                "machine only; use --artifacts SHARED_DIR or s3://BUCKET to resume on others",
                SERVER_FALLBACK)
    return SERVER_FALLBACK, "the server-storage fallback (this machine only)"


def absolute(location: str) -> str:
    """A folder as an absolute path (what a study records); ``s3://BUCKET`` as it is."""
    return location if location.startswith("s3://") else str(Path(location).resolve())


def open_artifact_store(location: str, s3_endpoint: str | None = None) -> Any:
    """A FileSystemArtifactStore for a folder, a Boto3ArtifactStore for ``s3://BUCKET`` (its
    bucket checked first: :func:`hpo.artifacts_s3.open_s3_store`)."""
    if location.startswith("s3://"):
        from hpo.artifacts_s3 import open_s3_store

        return open_s3_store(location, s3_endpoint)
    path = Path(location)
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(path)
