"""What every method's training shares: the loop, meshes, checkpoints, run
directories (local or gs://), locks, logging, optimisers, EMA and caches."""
