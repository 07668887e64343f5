"""Data directories and what reads them: Kaldi-style files, their checks, label inventories, audio, folds, batches."""
