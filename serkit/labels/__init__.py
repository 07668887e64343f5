"""Stage 1: label sequences from transcripts (G2P, emotion phonemes, phone sources, character/BPE units)."""
