"""Storage URLs opened from library code get the drivers hpo installs."""

from __future__ import annotations

from hpo.storage import open_storage


def test_a_plain_postgresql_url_opens_with_psycopg2() -> None:
    from resume_support import _ensure_postgres

    _ensure_postgres()
    storage = open_storage("postgresql://postgres@127.0.0.1:5432/test")
    assert storage.engine.url.drivername == "postgresql+psycopg2"
    assert isinstance(storage.get_all_studies(), list)  # a real round trip to the server
