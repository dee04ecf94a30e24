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


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Whether this process is one of several started by torchrun or accelerate."""
    return world_size() > 1


def init(device: str) -> None:
    """Join the process group early (nccl on GPUs, gloo on CPU), so that the plan can use barriers
    before the Trainer exists; the Trainer (accelerate) then uses this same group."""
    import torch.distributed as dist

    if launched() and not dist.is_initialized():
        if device == "cuda":
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=collective_timeout())


def collective_timeout():
    """An explicit, long collective timeout (``RECIPES_COLLECTIVE_TIMEOUT_MIN``, default 120 minutes):
    a checkpoint save or an evaluation on one rank must not end the run after torch's default 10."""
    from datetime import timedelta

    return timedelta(minutes=float(os.environ.get("RECIPES_COLLECTIVE_TIMEOUT_MIN", "120")))


def barrier() -> None:
    if launched():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def launch(argv: list[str], nproc: int, nnodes: int, node_rank: int, master_addr: str | None,
           master_port: int | None) -> int:
    """Run `recipes <argv>` in ``nproc`` processes per node through torch.distributed.run; its exit code.
    torchrun ends every process when one fails, and says which rank failed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", str(nnodes)]
    if nnodes == 1 and master_addr is None:
        command.append("--standalone")
    else:
        command += ["--node_rank", str(node_rank), "--master_addr", master_addr or "127.0.0.1",
                    "--master_port", str(master_port or 29500)]
    command += ["-m", "recipes", *argv]
    return subprocess.call(command)
