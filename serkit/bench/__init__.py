"""Measuring sticks for ``tools/benchmark.py``: not model families, never registered or exported.

:mod:`serkit.bench.baseline` is the plain SpeechBrain wav2vec 2.0 emotion recipe that serkit's
training step is timed against; :mod:`serkit.bench.paired` runs both side by side
(docs/benchmarks.md explains the figures).
"""
