"""serkit: speech emotion recognition recipes and shared library."""

__version__ = "0.1.0"
