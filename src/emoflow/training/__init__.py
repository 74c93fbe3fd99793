"""Training: the trainer (DDP, AMP, checkpoints), metrics, plots and evaluation."""
