"""A checkpoint saved after a stage's last step, loaded without training (a stage killed while it
published its outputs resumes straight to publishing)."""

from __future__ import annotations

from pathlib import Path


def restore_finished(trainer, checkpoint: Path) -> bool:
    """Load a checkpoint saved after the last step (a stage killed while publishing) without training:
    the Trainer would run one more step past max_steps when resumed from it."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    if not state.max_steps or state.global_step < state.max_steps:
        return False
    set_peft_model_state_dict(trainer.model, load_file(checkpoint / "adapter_model.safetensors"))
    trainer.state = state
    return True
