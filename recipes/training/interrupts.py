"""Ctrl-C while a stage trains stops at the next step boundary with a checkpoint; a second Ctrl-C
stops at once (the last checkpoint is then where a re-run resumes). Outside training, Ctrl-C stops at
once.

Several processes: the stop is decided together. At each step boundary every process all-reduces
whether any of them was asked to stop (``recipes.training.distributed.agreed_stop``), so all of them save the same step's
checkpoint and stop there, and none is left waiting in the next step's collective.

Under `recipes run --nproc N` the launcher starts torchrun in a session of its own, so a terminal's
Ctrl-C reaches the launcher only: it asks the processes to stop through a file they look for at each
step boundary (``STOP_FILE_ENV``), and a second Ctrl-C sends torchrun the interrupt that stops them at
once. Under torchrun started by hand, Ctrl-C reaches every process and torchrun itself, which forwards
it again to each process within milliseconds and kills what is still running after a timeout: no
common step can be agreed in that time, so the processes say so and stop at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

# the file whose existence asks the launched processes to stop after their current step
STOP_FILE_ENV = "RECIPES_STOP_FILE"


class _Stop:
    """Set by the first Ctrl-C while a stage trains; read at each step boundary."""

    requested = False
    training = False


STOP = _Stop()


def stop_file_present() -> bool:
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path) and os.path.exists(path)


def cannot_stop_gracefully(env=None) -> bool:
    """Whether Ctrl-C reaches this process together with torch's elastic agent, which forwards it again
    at once (torchrun, or accelerate launch of several processes, started by hand rather than through
    `recipes run --nproc`). The agent marks the processes it starts with TORCHELASTIC_RUN_ID."""
    env = os.environ if env is None else env
    return "TORCHELASTIC_RUN_ID" in env and not env.get(STOP_FILE_ENV)


@contextmanager
def graceful_interrupts(console):
    """Install the two-stage Ctrl-C handler for the duration of a run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if cannot_stop_gracefully():
            console.print("[yellow]Ctrl-C under torchrun: torchrun stops every process at once, so there is no "
                          "checkpoint at a common step; a re-run resumes from the last periodic checkpoint "
                          "(`recipes run --nproc N` stops gracefully)[/]")
            raise KeyboardInterrupt
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


class LauncherStop:
    """What the launcher did with Ctrl-C: ``presses`` so far."""

    presses = 0


@contextmanager
def forwarded_interrupts(process, stop_file: Path):
    """For the launcher of ``process`` (torchrun, started in a session of its own): the first Ctrl-C
    creates ``stop_file`` (the processes stop together after their step, with a checkpoint), the next
    sends torchrun's process group SIGINT (they stop at once). A hangup or termination is passed on."""
    stop = LauncherStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def interrupt(signum, frame):
        stop.presses += 1
        if stop.presses == 1:
            stop_file.touch()
            print("Ctrl-C: every process stops after its current step and saves a checkpoint "
                  "(Ctrl-C again stops at once)", file=sys.stderr, flush=True)
        else:
            _signal_group(process, signal.SIGINT)

    def pass_on(signum, frame):
        _signal_group(process, signum)

    handlers = {signal.SIGINT: interrupt, signal.SIGTERM: pass_on, signal.SIGHUP: pass_on}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_group(process, sig) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:  # already gone
        pass
