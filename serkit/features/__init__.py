"""Acoustic features as their own layer: the feature kinds a model family consumes, and CMVN statistics.

Each kind is one class (:class:`FeatureKind`, registry in :mod:`serkit.features.base`): the raw
``waveform``, ``log_mel_deltas`` and ``mfcc`` (:mod:`.spectral`), ``egemaps`` functionals
(:mod:`.egemaps`) and ``ssl_layers``, the hidden states of a frozen wav2vec 2.0 encoder
(:mod:`.ssl_layers`, with the encoder itself in :mod:`.encoder`). A family declares its input as
plain data (``kind``, ``sample_rate``, ``params``), so an export can rebuild the exact front end;
the data layer calls :meth:`FeatureKind.compute` on each utterance at its true length, so padding
added later for batching can never leak into a feature. :class:`FeatureStats` (:mod:`.cmvn`) holds
per-dimension mean/std over a fold's *training* utterances only.
"""
from serkit.features.base import (FEATURE_KINDS, FeatureError, FeatureKind, feature_from_dict, import_front_end,
                                  kind_class, make_feature)
from serkit.features.cmvn import FeatureStats
from serkit.features.egemaps import N_FUNCTIONALS, egemaps_functionals, functional_names
from serkit.features.spectral import frame_count, log_mel_deltas, mfcc

__all__ = ["FEATURE_KINDS", "N_FUNCTIONALS", "FeatureError", "FeatureKind", "FeatureStats", "egemaps_functionals",
           "feature_from_dict", "frame_count", "functional_names", "import_front_end", "kind_class",
           "log_mel_deltas", "make_feature", "mfcc"]
