"""Stage 5: a trained fold exported as a self-contained model, and inference with it."""
