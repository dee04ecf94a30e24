"""Several processes: torch's own launcher starts them; here is what the plan needs to know of them.

`recipes run RECIPE --nproc N` re-launches itself through ``torch.distributed.run`` (torchrun), and
`torchrun -m recipes run ...` or `accelerate launch -m recipes run ...` by hand is the same. The HF
Trainer does the data-parallel training (DDP); around it, the first process of each node prepares the
token store while the others poll for its ready marker (no collective call, so no timeout), only the
main process (rank 0) writes the manifest and publishes, and the others wait at a barrier.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Mapping

# the process group's timeout when the recipe does not set one: rank 0 tokenizes a large corpus and
# merges a 7B model alone while the others wait at a barrier; NCCL's own 10 minutes is too short
DEFAULT_TIMEOUT_MINUTES = 120



def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Whether this process is one of several started by torchrun or accelerate."""
    return world_size() > 1


def launched_in(env: Mapping[str, str]) -> bool:
    """Whether ``env`` is that of a process started by a launcher (torchrun, accelerate, deepspeed)."""
    return int(env.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in env


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch (the driver's /proc entries, within
    ``CUDA_VISIBLE_DEVICES``); 0 on a machine without them."""
    try:
        present = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return present
    return min(present, len([d for d in listed.split(",") if d.strip() and not d.strip().startswith("-")]))


def processes_to_launch(requested: int | None, device_count: int, env: Mapping[str, str]) -> tuple[int, str | None]:
    """How many processes `recipes run` starts on this node, and what to say about it (pure: the
    number of visible GPUs and the environment decide). Never 1 process driving several GPUs: the
    HF Trainer would wrap the model in nn.DataParallel, whose replicas share the chunked loss's hook.

    - started by a launcher: 1 (this process is already one of the launched ones);
    - ``--nproc N`` given: N;
    - not given: every visible GPU (torchrun), or 1 on CPU / one GPU."""
    if launched_in(env):
        return 1, None
    if requested is not None:
        note = (f"--nproc 1: training on 1 of the {device_count} visible GPUs (the others stay idle)"
                if requested == 1 and device_count > 1 else None)
        return requested, note
    if device_count > 1:
        return device_count, (f"{device_count} GPUs visible: running on all of them, one process each through "
                              "torchrun (--nproc 1 for a single GPU)")
    return 1, None


def timeout(minutes: int | None) -> timedelta:
    """``minutes`` (the recipe's), else ``$RECIPES_COLLECTIVE_TIMEOUT_MIN``, else the default."""
    return timedelta(minutes=minutes or float(os.environ.get("RECIPES_COLLECTIVE_TIMEOUT_MIN", DEFAULT_TIMEOUT_MINUTES)))


def init(device: str, timeout_minutes: int | None = None) -> None:
    """Join the process group early (nccl on GPUs, gloo on CPU), so that the plan can use barriers
    before the Trainer exists; the Trainer (accelerate) then uses this same group. The timeout is
    explicit and long (``[distributed] timeout_minutes``, default 2 h), see DEFAULT_TIMEOUT_MINUTES."""
    import torch.distributed as dist

    if launched() and not dist.is_initialized():
        if device == "cuda":
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timeout(timeout_minutes))


def any_rank(flag: bool, device=None) -> bool:
    """True when ``flag`` is true on any process (an all-reduce of one number; just ``flag`` alone).
    So that a NaN seen by one rank stops every rank at the same step, instead of leaving the others
    waiting in the next collective until the timeout."""
    if not launched():
        return flag
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    if device is None:
        device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def collective_timeout() -> timedelta:
    """The process group's timeout when the recipe sets none (``RECIPES_COLLECTIVE_TIMEOUT_MIN``, else
    the default): a checkpoint save or an evaluation on one rank must not end the run after torch's 10."""
    return timeout(None)


def barrier() -> None:
    if launched():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def launch(argv: list[str], nproc: int, nnodes: int, node_rank: int, master_addr: str | None,
           master_port: int | None) -> int:
    """Run `recipes <argv>` in ``nproc`` processes per node through torch.distributed.run; its exit code.
    torchrun ends every process when one fails, and says which rank failed. Ctrl-C: see
    ``recipes.training.interrupts`` (raises Interrupted once the processes have stopped)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", str(nnodes)]
    if nnodes == 1 and master_addr is None:
        command.append("--standalone")
    else:
        command += ["--node_rank", str(node_rank), "--master_addr", master_addr or "127.0.0.1",
                    "--master_port", str(master_port or 29500)]
    # the package's __main__.py by path, not `-m recipes`: with -m each process puts the current folder
    # first on the import path, and a `recipes/` folder there (of recipe files) would shadow the package
    import recipes

    command += [str(Path(recipes.__file__).resolve().parent / "__main__.py"), *argv]
    import tempfile

    from recipes.errors import Interrupted
    from recipes.training.interrupts import STOP_FILE_ENV, forwarded_interrupts

    # torchrun in a session of its own: a terminal's Ctrl-C reaches this process only, which asks the
    # workers to stop together (recipes.training.interrupts) instead of torchrun killing them at once
    with tempfile.TemporaryDirectory(prefix="recipes-stop-") as folder:
        stop_file = Path(folder) / "stop"
        process = subprocess.Popen(command, env={**os.environ, STOP_FILE_ENV: str(stop_file)}, start_new_session=True)
        with forwarded_interrupts(process, stop_file) as stop:
            code = process.wait()
    if code and stop.presses:
        raise Interrupted(f"the {nproc * nnodes}-process run stopped" + (
            " after a common step, with a checkpoint" if stop.presses == 1 else " at once")
            + ". Run the same command again to resume")
    return code


def agreed_stop() -> bool:
    """Whether every process stops after this step: any of them was interrupted, or the launcher asked
    (one all-reduce of one number under several processes; just the flag in one)."""
    from recipes.training.interrupts import STOP, stop_file_present

    STOP.requested = any_rank(STOP.requested or stop_file_present())
    return STOP.requested
