"""Stage 3: the shared trainer and what it leaves in a fold directory (checkpoints, precision, DDP, provenance)."""
