"""Search spaces: ``search_spaces/<name>.yaml`` <-> Optuna distributions.

A space file maps each hyperparameter name to its distribution. ``condition`` makes a parameter
active only when other parameters take given values (it is then not suggested at all, as in
Optuna's define-by-run)::

    params:
      lr:        {type: float, low: 1.0e-4, high: 0.1, log: true}
      optimizer: {type: categorical, choices: [adamw, sgd]}
      momentum:  {type: float, low: 0.8, high: 0.99, condition: {optimizer: sgd}}

    >>> import optuna
    >>> space = SearchSpace.model_validate({"params": {
    ...     "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    ...     "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    ...     "momentum": {"type": "float", "low": 0.8, "high": 0.99,
    ...                  "condition": {"optimizer": "sgd"}}}})
    >>> study = optuna.create_study()
    >>> params = space.suggest(study.ask())
    >>> ("momentum" in params) == (params["optimizer"] == "sgd")
    True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpo.errors import ConfigError
from hpo.yaml_io import config_error_from_pydantic, read_yaml

Choice = bool | int | float | str | None


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")

    condition: dict[str, Choice | list[Choice]] = Field(
        default_factory=dict, description="active only when every named parameter has this value"
    )

    def active(self, params: dict[str, Any]) -> bool:
        """Whether this parameter applies, given the values chosen so far."""
        for name, wanted in self.condition.items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if name not in params or params[name] not in allowed:
                return False
        return True


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self

    def distribution(self) -> BaseDistribution:
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log scale needs low >= 1 and step 1")
        return self

    def distribution(self) -> BaseDistribution:
        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    def distribution(self) -> BaseDistribution:
        return CategoricalDistribution(self.choices)

    def suggest(self, trial: optuna.Trial, name: str) -> Choice:
        return trial.suggest_categorical(name, self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SearchSpace(BaseModel):
    """An ordered mapping of parameter names to distributions (conditions refer to earlier ones).

    Read from ``search_spaces/NAME.yaml`` (:func:`hpo.config.load_study` does it); the names are
    :class:`~hpo.training.TrainConfig` fields. :meth:`suggest` draws one trial's values,
    :meth:`check` makes any proposed values valid (what the analysts' proposals go through).

    Example:

        >>> space = SearchSpace.model_validate({"params": {
        ...     "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
        ...     "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        ...     "momentum": {"type": "float", "low": 0.8, "high": 0.99,
        ...                  "condition": {"optimizer": "sgd"}}}})
        >>> space.check({"lr": 3.0, "optimizer": "adamw"})
        ({'lr': 0.1, 'optimizer': 'adamw'}, ['lr: 3.0 clipped to 0.1'])
        >>> import optuna
        >>> values = space.suggest(optuna.create_study().ask())
        >>> ("momentum" in values) == (values["optimizer"] == "sgd")
        True

    Args:
        params:
            Parameter name -> its distribution: ``type`` (``float``, ``int``,
            ``categorical``), ``low``/``high``/``log``/``step`` or ``choices``, and an optional
            ``condition`` on parameters declared above it (the parameter exists only when they
            take the given values).
    """

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Param] = Field(min_length=1)

    @field_validator("params")
    @classmethod
    def _conditions_refer_to_earlier_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        seen: list[str] = []
        for name, param in params.items():
            for ref in param.condition:
                if ref not in seen:
                    raise ValueError(
                        f"params.{name}.condition names {ref!r}; allowed: a parameter "
                        f"declared above it ({seen or 'none'})"
                    )
            seen.append(name)
        return params

    def names(self) -> list[str]:
        return list(self.params)

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter's Optuna distribution (conditional ones included)."""
        return {name: p.distribution() for name, p in self.params.items()}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest the active parameters of one trial, in declaration order."""
        params: dict[str, Any] = {}
        for name, p in self.params.items():
            if p.active(params):
                params[name] = p.suggest(trial, name)
        return params

    def check(
        self, params: dict[str, Any], fill: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        """Make a proposed set of values valid for this space; return ``(clean, corrections)``.

        Unknown names are dropped, numbers clipped to the range and snapped to the step, choices
        matched (``"64"`` -> ``64``), parameters whose condition does not hold dropped, missing
        ones taken from ``fill`` (e.g. the best trial) or the middle of the range. Every change
        is one line in ``corrections``::

            >>> space = SearchSpace.model_validate({"params": {
            ...     "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}})
            >>> space.check({"lr": 3.0, "dropout": 0.1})
            ({'lr': 0.1}, ["dropout: unknown parameter dropped (allowed: ['lr'])", 'lr: 3.0 clipped to 0.1'])
        """
        corrections = [f"{k}: unknown parameter dropped (allowed: {self.names()})"
                       for k in params if k not in self.params]
        clean: dict[str, Any] = {}
        for name, p in self.params.items():
            if not p.active(clean):
                if name in params:
                    corrections.append(f"{name}: dropped, its condition {p.condition} does not hold")
                continue
            value, note = _coerce(p, params[name]) if name in params else (None, "missing")
            if note is not None and value is None:
                fallback, fill_note = _coerce(p, (fill or {}).get(name))
                if fill_note is not None or (fill or {}).get(name) is None:
                    fallback = _middle(p)
                note = f"{note}; set to {fallback!r}"
                value = fallback
            if note:
                corrections.append(f"{name}: {note}")
            clean[name] = value
        return clean, corrections


def _middle(p: Any) -> Any:
    """A neutral value: the first choice, or the (geometric) middle of the range, on the step."""
    if isinstance(p, CategoricalParam):
        return p.choices[0]
    mid = (p.low * p.high) ** 0.5 if p.log else (p.low + p.high) / 2
    return _coerce(p, mid)[0]


def _coerce(p: Any, value: Any) -> tuple[Any, str | None]:
    """``(valid value, None)``, ``(valid value, what was changed)`` or ``(None, why unusable)``."""
    if isinstance(p, CategoricalParam):
        if value in p.choices and any(type(value) is type(c) for c in p.choices if c == value):
            return value, None
        for c in p.choices:
            if str(c).lower() == str(value).strip().lower():
                return c, f"{value!r} matched to choice {c!r}"
        numeric = [c for c in p.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = None
        if numeric and x is not None and not math.isnan(x):
            nearest = min(numeric, key=lambda c: abs(c - x))
            return nearest, f"{value!r} snapped to nearest choice {nearest!r}"
        return None, f"{value!r} is not one of {p.choices}"
    try:
        if isinstance(value, bool) or value is None:
            raise TypeError
        x = float(value)
    except (TypeError, ValueError):
        return None, f"{value!r} is not a number"
    if not math.isfinite(x):
        return None, f"{value!r} is not finite"
    notes = []
    if x < p.low or x > p.high:
        clipped = min(max(x, p.low), p.high)
        notes.append(f"{value!r} clipped to {clipped!r}")
        x = clipped
    step = p.step
    if step is not None:
        snapped = p.low + round((x - p.low) / step) * step
        snapped = min(snapped, p.low + ((p.high - p.low) // step) * step)
        snapped = round(snapped, 12)
        if abs(snapped - x) > 1e-12 * max(1.0, abs(x)):
            notes.append(f"{x!r} snapped to step {step!r}: {snapped!r}")
        x = snapped
    if isinstance(p, IntParam):
        if round(x) != x:
            notes.append(f"{x!r} rounded to {round(x)}")
        x = round(x)
    return x, ("; ".join(notes) or None)


def load_space(path: Path, allowed_names: dict[str, type[BaseModel]] | None = None) -> SearchSpace:
    """Load ``path`` and check every parameter names a known knob with values that knob accepts."""
    data = read_yaml(path)
    try:
        space = SearchSpace(**data)
    except ValidationError as exc:
        error = config_error_from_pydantic(path, exc)
        parts = error.key.split(".")
        if len(parts) > 2 and parts[2] in ("float", "int", "categorical"):  # pydantic's union tag
            del parts[2]
        raise ConfigError(path, ".".join(parts), error.value, error.allowed) from None
    if allowed_names is None:
        return space
    for name, param in space.params.items():
        if name not in allowed_names:
            raise ConfigError(path, f"params.{name}", name, f"one of {sorted(allowed_names)}")
        values = param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
        for value in values:
            try:
                allowed_names[name](**{name: value})
            except ValidationError as exc:
                raise ConfigError(
                    path, f"params.{name}", value, exc.errors()[0]["msg"]
                ) from None
    return space


def dump_space(space: SearchSpace) -> str:
    """The space as YAML (for prompts and reports)."""
    return yaml.safe_dump(space.model_dump(exclude_defaults=True), sort_keys=False)
