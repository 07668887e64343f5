"""Synthetic speech corpora for tests and demo recipes.

``serkit.synth.mini_iemocap`` writes a small corpus in the exact IEMOCAP_full_release layout, spoken
by espeak-ng voices (``serkit.synth.espeak``) reading scripted lines (``serkit.synth.sentences``),
with the four emotions rendered through prosody. Import those modules directly: this package
imports nothing heavy, so espeak worker processes start fast.
"""
