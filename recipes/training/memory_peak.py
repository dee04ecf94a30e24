"""A stage's own peak memory, not the process's peak so far (stage 2 would show stage 1's).

On a GPU: torch's allocator peak, reset when the stage starts. On CPU: the process's resident memory
(RSS), sampled by a background thread from the stage's start to its end; the tokenizing worker
processes are not counted (their memory is their own). Where /proc is missing (macOS), the process's
peak so far is all the operating system gives.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import weakref

INTERVAL_SECONDS = 0.05


def resident_bytes() -> int:
    """This process's resident memory now (Linux: /proc/self/statm); elsewhere its peak so far."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class StagePeak:
    """Started when the stage starts; ``stop()`` gives the stage's peak in bytes."""

    def __init__(self, device: str, interval: float = INTERVAL_SECONDS):
        self.device, self.peak = device, 0
        self._done = threading.Event()
        self._thread = None
        if device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            return
        self.peak = resident_bytes()
        # the thread holds the object weakly: a stage that fails without stop() does not leave it sampling
        self._thread = threading.Thread(target=_sample, args=(weakref.ref(self), self._done, interval),
                                        name="recipes-memory-peak", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        if self.device == "cuda":
            import torch

            return int(torch.cuda.max_memory_allocated())
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.peak = max(self.peak, resident_bytes())
        return self.peak

    def __del__(self):
        self._done.set()


def release_memory(device: str) -> None:
    """Between stages: collect what the finished stage left (cycles in libraries' objects included)
    and hand the allocator's cached blocks back to the driver, so the next stage's peak starts from
    what it holds itself."""
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _sample(ref, done: threading.Event, interval: float) -> None:
    while not done.wait(interval):
        peak = ref()
        if peak is None:
            return
        peak.peak = max(peak.peak, resident_bytes())
        del peak
