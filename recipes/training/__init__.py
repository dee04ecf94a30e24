"""4. Training: one stage: model, adapters, the Trainer with its loss and guards, evaluation."""
