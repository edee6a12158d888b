"""Training: state, optimisers, pure update steps, mesh, checkpoints, trainer."""
