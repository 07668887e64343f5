"""Stage 4: metrics, scoring of cross-validated experiments, RESULTS.md, plots, statistics and comparisons."""
