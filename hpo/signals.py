"""Ctrl-C and SIGTERM: stop the running trial cleanly, leave it for retry, exit 130/143.

The first SIGINT/SIGTERM raises :class:`Interrupted` in the main thread (training stops between
two operations, within a fraction of a second). Code that must not be cut in half, such as
uploading a checkpoint and then pointing the trial at it, runs inside :func:`critical`: a signal
that arrives there is held until the block ends. A raise lost inside a ``__del__`` or a weakref
callback is made again by the next :func:`raise_if_received` (between epochs, before a trial).
A second signal exits at once (``os._exit``), except inside :func:`shielded` (failing a trial
and queuing its retry), which it lets finish first; a third exits even there.

    >>> with handle_signals():                       # doctest: +SKIP
    ...     train()                                  # raises Interrupted on Ctrl-C
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number (130 or 143)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"{signal.Signals(signum).name} received")


_state = {"received": None, "critical": 0, "held": None, "shielded": 0, "exit": None}


def _exit_now(signum: int) -> None:
    """A second signal: say so and exit with 128 + its number, no clean-up."""
    sys.stderr.write(f"hpo: second {signal.Signals(signum).name}: exiting now\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def _handler(signum: int, _frame: object) -> None:
    if _state["received"] is not None:
        if _state["shielded"] and _state["exit"] is None:  # a few writes that must not be cut
            _state["exit"] = signum                            # in half: exit right after them
            return                                             # (a third signal exits now)
        _exit_now(signum)
    _state["received"] = signum
    sys.stderr.write(f"hpo: {signal.Signals(signum).name}: checkpointing the running trial and "
                     "leaving it for retry (again to exit at once)\n")
    sys.stderr.flush()
    if _state["critical"]:
        _state["held"] = signum
        return
    raise Interrupted(signum)


def received() -> int | None:
    """The signal received so far, else None."""
    return _state["received"]


def raise_if_received() -> None:
    """Raise :class:`Interrupted` for a signal already received, outside :func:`critical` and
    :func:`shielded` blocks; a no-op when none arrived.

    The handler's own raise can be lost: a signal that arrives while Python runs a ``__del__``
    or a weakref callback (SQLAlchemy's garbage-collection hooks, say) has its exception
    printed as "ignored", and the run would go on as if none had come. Workers call this
    between epochs and before each trial, so such a signal still stops the run there.

        >>> raise_if_received()                      # no signal: nothing happens
    """
    signum = _state["received"]
    if signum is not None and not _state["critical"] and not _state["shielded"]:
        raise Interrupted(signum)


@contextmanager
def critical() -> Iterator[None]:
    """Hold a first signal until the block ends (then raise :class:`Interrupted`)."""
    _state["critical"] += 1
    try:
        yield
    finally:
        _state["critical"] -= 1
        held = _state["held"]
        if held is not None and not _state["critical"]:
            _state["held"] = None
            raise Interrupted(held)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold even a second signal until the block ends, then exit at once (``os._exit``).

    For the few storage writes that must happen together, such as failing an interrupted trial
    and queuing its retry: a second Ctrl-C between them would leave a FAIL trial no one retries.
    A third signal exits at once even here (say the database hangs).
    """
    _state["shielded"] += 1
    try:
        yield
    finally:
        _state["shielded"] -= 1
        signum = _state["exit"]
        if signum is not None and not _state["shielded"]:
            _exit_now(signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Install the handlers for the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _state.update(received=None, critical=0, held=None, shielded=0, exit=None)
    for sig in previous:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        if _state["received"] is None:
            for sig, old in previous.items():
                signal.signal(sig, old)
        # else: keep ours while the process winds down, so a second signal exits at once
