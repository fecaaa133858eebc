"""Reading many trials from an RDB storage fast: Optuna's own tables, read with SQLAlchemy Core.

Optuna's :class:`~optuna.storages.RDBStorage` reads trials through the ORM: one Python object per
row of six tables and a JSON decode of every parameter's distribution. A 10,000-trial study
(~230,000 rows) takes 11-14 s on this 2-core machine, which is what a dashboard's first view
of such a study waited for. :class:`FastReadRDBStorage` is that storage with its trial read
(``_get_trials``, what ``get_all_trials`` and Optuna's trial cache call) done as six plain
``SELECT`` s of the same rows, each distinct distribution decoded once: the same
:class:`~optuna.trial.FrozenTrial` s (``tests/test_rdb_reader.py`` compares them with Optuna's
on SQLite, PostgreSQL and MySQL), several times faster. Everything else, writes included, is
Optuna's.

    >>> import tempfile, optuna
    >>> url = f"sqlite:///{tempfile.mkdtemp()}/r.db"
    >>> study = optuna.create_study(study_name="r", storage=url)
    >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    >>> study_id = FastReadRDBStorage(url).get_study_id_from_name("r")
    >>> FastReadRDBStorage(url).get_all_trials(study_id) == study.get_trials()
    True
"""

from __future__ import annotations

import datetime
import json
from collections import defaultdict
from collections.abc import Container, Iterable
from typing import Any

import sqlalchemy as sa
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpo.optuna_private import rdb_models

# Optuna's IN (...) of running trial ids; past this many, the trials are filtered here instead
# (SQLite allows 32,766 bound variables, older builds 999)
MAX_IN_IDS = 500


def local_time(utc: datetime.datetime | None) -> datetime.datetime | None:
    """A trial datetime as Optuna gives it: stored as naive UTC, returned as naive local time.

        >>> local_time(None) is None
        True
    """
    if utc is None:
        return None
    return utc.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)


class FastReadRDBStorage(RDBStorage):
    """An :class:`~optuna.storages.RDBStorage` (same arguments) whose trial reads use
    SQLAlchemy Core: see the module docstring.

    Args:
        *args: as :class:`optuna.storages.RDBStorage`.
        **kwargs: as :class:`optuna.storages.RDBStorage`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._distributions: dict[str, BaseDistribution] = {}

    def _get_trials(self, study_id: int, states: Container[TrialState] | None,
                    included_trial_ids: set[int], trial_id_greater_than: int) -> list[FrozenTrial]:
        """The study's trials in ``states`` (None: all) with an id above
        ``trial_id_greater_than`` or in ``included_trial_ids`` (those at or below it), by id:
        Optuna's ``RDBStorage._get_trials``, read row by row."""
        m = rdb_models()
        trials = m.TrialModel.__table__
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        where = [trials.c.study_id == study_id]
        if states is not None:
            assert isinstance(states, Iterable)
            where.append(trials.c.state.in_(list(states)))
        filter_here = len(included) > MAX_IN_IDS
        if trial_id_greater_than > -1 and not filter_here:
            newer = trials.c.trial_id > trial_id_greater_than
            where.append(sa.or_(trials.c.trial_id.in_(included), newer) if included else newer)
        chosen = sa.select(trials.c.trial_id).where(*where).scalar_subquery()
        studies = m.StudyModel.__table__
        with self.engine.connect() as conn:
            if conn.execute(sa.select(studies.c.study_id)
                            .where(studies.c.study_id == study_id)).first() is None:
                raise KeyError(m.NOT_FOUND_MSG)  # what Optuna raises for a study not there
            rows = conn.execute(
                sa.select(trials.c.trial_id, trials.c.number, trials.c.state,
                          trials.c.datetime_start, trials.c.datetime_complete)
                .where(*where).order_by(trials.c.trial_id)).all()
            children = {name: self._children(conn, table, columns, chosen)
                        for name, (table, columns) in _child_tables(m).items()}
        if filter_here:
            rows = [r for r in rows if r[0] in included or r[0] > trial_id_greater_than]
        return [self._frozen(row, children, m) for row in rows]

    @staticmethod
    def _children(conn: sa.Connection, table: sa.Table, columns: tuple[str, ...],
                  chosen: Any) -> dict[int, list[Any]]:
        """``columns`` of ``table``'s rows for the chosen trials, by trial id, in row order."""
        by_trial: dict[int, list[Any]] = defaultdict(list)
        primary = next(iter(table.primary_key.columns))
        query = (sa.select(table.c.trial_id, *(table.c[c] for c in columns))
                 .where(table.c.trial_id.in_(chosen)).order_by(primary))
        for trial_id, *values in conn.execute(query):
            by_trial[trial_id].append(values)
        return by_trial

    def _distribution(self, text: str) -> BaseDistribution:
        """The distribution of a stored JSON text, decoded once per text (trials share it)."""
        found = self._distributions.get(text)
        if found is None:
            found = self._distributions[text] = json_to_distribution(text)
        return found

    def _frozen(self, row: Any, children: dict[str, dict[int, list[Any]]], m: Any) -> FrozenTrial:
        trial_id, number, state, start, complete = row
        stored_values = children["values"].get(trial_id)
        values: list[float] | None = None
        if stored_values:
            values = [0.0] * len(stored_values)
            for objective, value, value_type in stored_values:
                values[objective] = m.TrialValueModel.stored_repr_to_value(value, value_type)
        params: dict[str, Any] = {}
        distributions: dict[str, BaseDistribution] = {}
        for name, value, text in children["params"].get(trial_id, ()):
            distributions[name] = self._distribution(text)
            params[name] = distributions[name].to_external_repr(value)
        to_intermediate = m.TrialIntermediateValueModel.stored_repr_to_intermediate_value
        return FrozenTrial(
            number=number, state=state, value=None, values=values,
            datetime_start=local_time(start), datetime_complete=local_time(complete),
            params=params, distributions=distributions,
            user_attrs={k: json.loads(v) for k, v in children["user_attrs"].get(trial_id, ())},
            system_attrs={k: json.loads(v)
                          for k, v in children["system_attrs"].get(trial_id, ())},
            intermediate_values={step: to_intermediate(value, value_type) for step, value, value_type
                                 in children["intermediate_values"].get(trial_id, ())},
            trial_id=trial_id)


def _child_tables(m: Any) -> dict[str, tuple[sa.Table, tuple[str, ...]]]:
    """The per-trial tables and the columns read from each."""
    return {
        "values": (m.TrialValueModel.__table__, ("objective", "value", "value_type")),
        "params": (m.TrialParamModel.__table__, ("param_name", "param_value",
                                                 "distribution_json")),
        "user_attrs": (m.TrialUserAttributeModel.__table__, ("key", "value_json")),
        "system_attrs": (m.TrialSystemAttributeModel.__table__, ("key", "value_json")),
        "intermediate_values": (m.TrialIntermediateValueModel.__table__,
                                ("step", "intermediate_value", "intermediate_value_type")),
    }
