"""Training machinery, kept apart from the math: EMA, checkpoints, data order, processes, logging, the loop."""
