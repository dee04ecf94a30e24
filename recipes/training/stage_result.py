"""What a stage gives the run: its result (``StageResult``, written to stage.json) and what it reports
while it trains (``StageProgress``, which the runner keeps in the manifest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass
class StageResult:
    name: str
    kind: str
    base: str
    precision: str
    steps: int
    first_loss: float | None
    final_loss: float | None
    train_seconds: float
    tokens_seen: int
    trainable_params: int
    total_params: int
    adapter_dir: str
    merged_dir: str
    data: dict
    eval_before: dict | None = None  # per evaluation set: loss and perplexity
    eval_after: dict | None = None
    eval_loss_before: float | None = None  # of the held-out set (or the first evaluation set)
    eval_loss_after: float | None = None
    eval_perplexity_before: float | None = None
    eval_perplexity_after: float | None = None
    peak_memory_bytes: int | None = None  # the stage's own (recipes.training.memory_peak)
    wall_seconds: float | None = None  # from the stage's start to its outputs published ("done in")
    # the plan's evaluation matrix: every stage's sets (STAGE/SET) on the starting model (the first
    # stage only) and after this stage
    eval_matrix: dict | None = None
    mix: list | None = None  # per training source: examples, tokens and share of the stage's mix
    # the recipe's benchmarks: on the starting model (the first stage only) and after this stage
    benchmarks: dict | None = None
    source_losses: dict | None = None  # per training source: the last logged training loss
    # a quantizing backend publishes the adapter merged into the unquantized base, which is not the
    # model that trained: the held-out set's loss on the published merged model, and its difference
    # from eval_loss_after (measured on the quantized weights)
    eval_loss_merged: float | None = None
    eval_loss_merged_change: float | None = None


class StageProgress(Protocol):
    """What a stage tells the run while it trains (the runner keeps it in the manifest)."""

    def checkpoint_saved(self, folder: Path, step: int) -> None: ...
    def last_checkpoint(self) -> Path | None: ...
    def eval_before(self) -> dict | None: ...
    def evaluated_before(self, results: dict) -> None: ...
    def failed(self, error: str) -> None: ...
    def training_started(self) -> None: ...
