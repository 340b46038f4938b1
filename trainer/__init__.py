"""Training: datasets, models, checkpoints and the training loop (`python -m trainer`)."""
