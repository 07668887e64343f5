"""The feature-kind contract and its registry.

A :class:`FeatureKind` is one input a model family consumes, with its parameters: it checks them,
computes the feature from one utterance's waveform, knows the shape and count of the frames it gives,
names its cache folder (a hash of its plain data) and, for an export, the front end the export must
carry. Each kind lives in its own module of this package and is found by its config name through
:func:`kind_class`; a kind's module is imported on first use, so a recipe that never asks for eGeMAPS
or SSL layers never loads openSMILE or transformers.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor

from serkit.errors import SerkitError

#: config name -> the module that defines (and registers) the kind
KIND_MODULES = {
    "waveform": "serkit.features.waveform",
    "log_mel_deltas": "serkit.features.spectral",
    "mfcc": "serkit.features.spectral",
    "egemaps": "serkit.features.egemaps",
    "ssl_layers": "serkit.features.ssl_layers",
}
FEATURE_KINDS = tuple(KIND_MODULES)
_REGISTERED: dict[str, type[FeatureKind]] = {}


class FeatureError(SerkitError):
    """A feature specification or an input waveform that cannot be turned into features."""


def check_waveform(waveform: Tensor) -> Tensor:
    """``waveform`` as a float32 tensor of shape [T] or [B, T]; anything else is a :class:`FeatureError`."""
    waveform = torch.as_tensor(waveform)
    if waveform.dim() not in (1, 2) or waveform.shape[-1] == 0:
        raise FeatureError(f"expected a non-empty waveform of shape [T] or [B, T], got {tuple(waveform.shape)}; "
                           "read audio with serkit.data.audio.read_audio")
    return waveform.to(torch.float32)


class FeatureKind:
    """Base class of a feature kind: ``kind`` + ``sample_rate`` + ``params``, plain data an export stores.

    ``params`` may leave settings out; they take the kind's :attr:`defaults`, and :meth:`to_dict`
    writes every setting, so an export never depends on a later change of defaults.
    """

    kind: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    cached: ClassVar[bool] = True  # worth storing on disk (the waveform is already there)

    def __init__(self, sample_rate: int = 16000, params: Mapping[str, Any] | None = None):
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise FeatureError(f"feature {self.kind!r} has no setting(s) {', '.join(unknown)}; "
                               f"known: {', '.join(self.defaults) or 'none'}")
        self.sample_rate = int(sample_rate)
        self.params = {**self.defaults, **params}
        self.check()

    def check(self) -> None:
        """Refuse parameter values the kind cannot compute with (a :class:`FeatureError` naming the fix)."""

    # ---- what the kind gives
    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame, e.g. () for a waveform sample or (n_mfcc,)."""
        raise NotImplementedError

    def n_frames(self, n_samples: int) -> int:
        """Frames :meth:`compute` returns for a waveform of ``n_samples`` samples."""
        raise NotImplementedError

    def compute(self, waveform: Tensor, sample_rate: int) -> Tensor:
        """Features of one utterance [T] (or equal-length rows [B, T]): [frames, *frame_shape]."""
        if int(sample_rate) != self.sample_rate:
            raise FeatureError(f"audio at {sample_rate} Hz, but the {self.kind} features are defined at "
                               f"{self.sample_rate} Hz; resample it (serkit.data.audio.read_audio does)")
        return self._compute(check_waveform(waveform))

    def _compute(self, waveform: Tensor) -> Tensor:
        raise NotImplementedError

    # ---- plain data, cache and export
    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "sample_rate": self.sample_rate, "params": dict(self.params)}

    def cache_name(self) -> str:
        """The cache folder of this exact spec: ``<kind>-<hash of to_dict()>``; another setting, another folder."""
        digest = hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.kind}-{digest}"

    def export_front_end(self, out_dir: str | Path) -> dict[str, Any]:
        """The spec an export's config records, after copying into ``out_dir`` what computing it needs."""
        return self.to_dict()

    @classmethod
    def import_front_end(cls, feature: dict[str, Any], export_dir: str | Path) -> dict[str, Any]:
        """An export's recorded spec made usable from wherever the export now lies (:meth:`export_front_end`)."""
        return feature

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureKind) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sample_rate={self.sample_rate}, params={self.params})"


def register(cls: type[FeatureKind]) -> type[FeatureKind]:
    """Class decorator: make ``cls`` the kind its ``kind`` name (listed in :data:`KIND_MODULES`) means."""
    if KIND_MODULES.get(cls.kind) != cls.__module__:
        raise FeatureError(f"feature kind {cls.kind!r} of {cls.__module__} is not listed in KIND_MODULES")
    _REGISTERED[cls.kind] = cls
    return cls


def kind_class(kind: str) -> type[FeatureKind]:
    """The class of feature kind ``kind`` (its module imported on first use)."""
    if kind not in KIND_MODULES:
        raise FeatureError(f"unknown feature kind {kind!r}; choose one of {', '.join(FEATURE_KINDS)}")
    importlib.import_module(KIND_MODULES[kind])
    return _REGISTERED[kind]


def make_feature(kind: str = "waveform", sample_rate: int = 16000,
                 params: Mapping[str, Any] | None = None) -> FeatureKind:
    """The feature ``kind`` with ``params`` at ``sample_rate`` (checked)."""
    return kind_class(kind)(sample_rate, params)


def feature_from_dict(data: Mapping[str, Any]) -> FeatureKind:
    """The feature a config's ``feature`` mapping (``kind``, ``sample_rate``, ``params``) describes."""
    unknown = sorted(set(data) - {"kind", "sample_rate", "params"})
    if unknown:
        raise FeatureError(f"feature spec has unknown key(s) {', '.join(unknown)}; expected kind, sample_rate, params")
    return make_feature(data.get("kind", "waveform"), int(data.get("sample_rate", 16000)), data.get("params"))


def import_front_end(feature: dict[str, Any], export_dir: str | Path) -> dict[str, Any]:
    """An export's recorded ``feature`` made usable from ``export_dir`` (see :meth:`FeatureKind.import_front_end`)."""
    return kind_class(feature.get("kind", "waveform")).import_front_end(feature, export_dir)
