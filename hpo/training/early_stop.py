"""Early stopping inside a trial: stop after ``patience`` epochs without a ``min_delta`` gain.

    >>> stop = EarlyStopping(patience=2, min_delta=0.01, mode="min")
    >>> [stop.update(v) for v in (1.0, 0.996, 0.995)]
    [False, False, True]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass
class EarlyStopping:
    """Tracks the best value; ``patience=None`` never stops."""

    patience: int | None
    min_delta: float = 0.0
    mode: Literal["min", "max"] = "min"
    best: float | None = None
    bad_epochs: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; ``True`` when training should stop."""
        sign = 1.0 if self.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
