"""Ctrl-C while a stage trains stops at the next step boundary with a checkpoint; a second Ctrl-C
stops at once (the last checkpoint is then where a re-run resumes). Outside training, Ctrl-C stops at
once."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class _Stop:
    """Set by the first Ctrl-C while a stage trains; read at each step boundary."""

    requested = False
    training = False


STOP = _Stop()


@contextmanager
def graceful_interrupts(console):
    """Install the two-stage Ctrl-C handler for the duration of a run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if STOP.training and not STOP.requested:
            STOP.requested = True
            console.print("[yellow]Ctrl-C: stopping after this step and saving a checkpoint "
                          "(Ctrl-C again stops at once)[/]")
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        STOP.requested = STOP.training = False
