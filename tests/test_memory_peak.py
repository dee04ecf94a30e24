"""Issue 20: a stage's peak memory is its own, not the process's peak so far (on CPU: RSS sampled by a
background thread while the stage runs). Real allocations, real /proc readings."""

from __future__ import annotations

import gc
import time

from recipes.training.memory_peak import INTERVAL_SECONDS, StagePeak, resident_bytes

MIB = 1 << 20


def _hold(mib: int, until, deadline: float = 30) -> None:
    """Touch ``mib`` MiB until ``until()`` holds (the sampler, a thread that a loaded machine may starve,
    has seen it: no fixed sleep), then free it (large blocks go back to the system at once)."""
    block = bytearray(mib * MIB)
    block[::4096] = b"\x01" * len(block[::4096])  # resident, not only reserved
    give_up = time.monotonic() + deadline
    while not until():
        assert time.monotonic() < give_up, f"the sampler never saw the {mib} MiB block in {deadline} s"
        time.sleep(INTERVAL_SECONDS)
    del block


def test_a_stage_sees_its_own_peak_not_the_one_before_it():
    first = StagePeak("cpu")
    start = resident_bytes()
    _hold(300, lambda: first.peak >= start + 250 * MIB)  # freed before the stage ends: only the sampler sees it
    first_peak = first.stop()
    assert first_peak >= start + 250 * MIB, (first_peak, start)
    assert resident_bytes() < first_peak - 200 * MIB  # the memory went back to the system
    second = StagePeak("cpu")  # a stage that allocates little: its peak is what it saw, not stage 1's
    second_peak = second.stop()
    assert second_peak < first_peak - 200 * MIB, (second_peak, first_peak)  # not stage 1's
    assert second_peak >= resident_bytes()


def test_a_stage_that_fails_before_stop_leaves_no_sampler_running():
    peak = StagePeak("cpu")
    thread = peak._thread
    assert thread.is_alive()
    del peak  # as when the stage raised before result()
    gc.collect()
    thread.join(timeout=10 * INTERVAL_SECONDS)
    assert not thread.is_alive()
