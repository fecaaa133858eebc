"""Waiting on events, never on the clock: a test polls the real state until it holds.

No test asserts how long something took, or what the state is after a fixed sleep: on a loaded
2-core machine any such number is wrong some day. :func:`wait_for` polls a predicate and returns
its first truthy value; the timeout only bounds a hang (it is generous on purpose, and the global
``timeout`` in pyproject.toml bounds every test again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

GENEROUS = 300.0  # seconds: a bound for a hang, never a speed requirement


def wait_for(predicate: Callable[[], T], timeout: float = GENEROUS, every: float = 0.2,
             what: str | Callable[[], str] = "condition",
             ignore: tuple[type[Exception], ...] = ()) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails the test after ``timeout`` seconds, naming ``what`` (a text, or a function giving one
    then: the state to show) and the last value the predicate gave. Exceptions of the ``ignore``
    types count as "not yet" (e.g. tables not created yet); any other fails the test at once.
    """
    end = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except ignore as exc:  # not there yet; shown if it never comes
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= end:
            said = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {said} (last: {last!r})")
        time.sleep(every)
