"""Reading the YAML files users write (study files, search spaces), with a ConfigError per mistake.

Shared by :mod:`hpo.config` and :mod:`hpo.space`, and depends on neither (only on
:mod:`hpo.errors`), so the study config can hold a search space without an import circle. A
missing or malformed file, or a value pydantic rejects, becomes a ConfigError naming the file,
the key, the value and what is allowed (never a traceback)::

    >>> from pydantic import BaseModel, ValidationError
    >>> class Budget(BaseModel):
    ...     n_trials: int
    >>> try:   # doctest: +ELLIPSIS
    ...     Budget(n_trials="many")
    ... except ValidationError as exc:
    ...     print(config_error_from_pydantic("studies/x.yaml", exc, prefix="budget"))
    studies/x.yaml: budget.n_trials = 'many' is invalid; allowed: Input should be a valid integer...
    >>> read_yaml(Path("no/such.yaml"))   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    hpo.errors.ConfigError: no/such.yaml: (file) = 'no/such.yaml' is invalid; allowed: an existing...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpo.errors import ConfigError


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))


def config_error_from_pydantic(file: Path | str, exc: ValidationError, prefix: str = "") -> ConfigError:
    """Turn pydantic's first error into a ConfigError naming file, key, value and what is allowed."""
    err = exc.errors()[0]
    key = ".".join(p for p in (prefix, _loc(err)) if p) or "(top level)"
    allowed = err["msg"]
    if err["type"] == "extra_forbidden":
        allowed = "a known key; this one is not recognised"
    if err["type"] == "literal_error":
        allowed = "one of " + err["ctx"]["expected"]
    return ConfigError(file, key, err.get("input"), allowed)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a ConfigError (not a traceback) when it is missing or malformed."""
    if not path.is_file():
        raise ConfigError(path, "(file)", str(path), "an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(path, "(file)", "malformed YAML", f"valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "(top level)", data, "a mapping of keys to values")
    return data
