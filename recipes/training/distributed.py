"""Several processes: torch's own launcher starts them; here is what the plan needs to know of them.

`recipes run RECIPE --nproc N` re-launches itself through ``torch.distributed.run`` (torchrun), and
`torchrun -m recipes run ...` or `accelerate launch -m recipes run ...` by hand is the same. The HF
Trainer does the data-parallel training (DDP); around it, only the main process (rank 0) tokenizes
first, writes the manifest and publishes, and the others wait at a barrier, then read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
        dist.init_process_group("nccl" if device == "cuda" else "gloo")


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
    # the package's __main__.py by path, not `-m recipes`: with -m each process puts the current folder
    # first on the import path, and a `recipes/` folder there (of recipe files) would shadow the package
    import recipes

    command += [str(Path(recipes.__file__).resolve().parent / "__main__.py"), *argv]
    return subprocess.call(command)
