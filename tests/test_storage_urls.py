"""Storage URLs opened from library code get the drivers hpo installs."""

from __future__ import annotations

from hpo.storage import open_storage


def test_a_plain_postgresql_url_opens_with_psycopg2() -> None:
    from resume_support import _ensure_postgres

    _ensure_postgres()
    storage = open_storage("postgresql://postgres@127.0.0.1:5432/test")
    assert storage.engine.url.drivername == "postgresql+psycopg2"
    assert isinstance(storage.get_all_studies(), list)  # a real round trip to the server


def test_read_only_opening_needs_an_existing_sqlite_file(tmp_path) -> None:
    """A missing file is an error naming it (exit code 2), and nothing is created; an existing
    one opens as with open_storage."""
    import pytest

    from hpo.storage import StorageNotFoundError, open_existing_storage

    missing = tmp_path / "tpyo" / "hpo.db"
    with pytest.raises(StorageNotFoundError, match=f"no SQLite file {missing} ") as err:
        open_existing_storage(f"sqlite:///{missing}")
    assert err.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    open_storage(url).engine.dispose()  # a storage made by a command that writes
    assert open_existing_storage(url).get_all_studies() == []
