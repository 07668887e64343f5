"""The ``ssl_layers`` feature kind: every hidden state ``H_0 .. H_N`` of a *frozen* SSL encoder (any of
:data:`serkit.features.encoder.ENCODER_TYPES`).

The s3prl/EmoBox probing protocol (Yang et al. 2021; Ma et al. 2024) trains only a layer-weighted
head over a frozen self-supervised encoder. A frozen encoder gives the same layer outputs every
epoch, so serkit computes them once per utterance, stores them in the feature cache
(:class:`serkit.data.dataio.FeatureCache`, float16: half the disk) and trains the head from there; an
epoch then costs only the head (docs/models.md, "SSL probe").

The layers are exactly the ``H_i`` that :class:`serkit.model.w2v2_mtl.W2V2Network` fuses
(:func:`serkit.features.encoder.hidden_states`): the encoder's own input (the waveform, normalised over
its real samples if its feature extractor normalises; Whisper's log-Mel), the encoder in eval mode at
the utterance's true length (no padding, no dropout, no LayerDrop). They are computed in float32 and
only then cast to float16.

A cache entry must never outlive the weights it came from, so the feature spec carries a digest of
the encoder's weights (:func:`weights_digest`): another checkpoint, even at the same path, gives
another spec hash and so another cache folder, and an export whose encoder copy no longer matches its
config is refused.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from serkit.features.base import FeatureError, FeatureKind, register
from serkit.features import encoder as ssl_encoder

EXPORT_ENCODER_DIR = "encoder"  # the encoder copy inside an export folder (docs/formats.md)
LEGACY_INPUT = {"kind": "waveform", "sampling_rate": 16000, "do_normalize": True}  # see SSLLayers._check_input


class SSLFeatureError(FeatureError):
    """The frozen encoder of an ``ssl_layers`` feature is missing or is not the one the spec names."""


def _fingerprint(source: str) -> tuple:
    """What tells a changed local encoder folder apart: its files' names, sizes and modification times.

    Part of the key of :func:`_load`, so replacing the weights under the same path in a running process
    loads (and digests) the new ones. A hub id has no local files to look at.
    """
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


@lru_cache(maxsize=2)
def _load(source: str, encoder_type: str | None, fingerprint: tuple):
    """The encoder in eval mode with gradients off, and its weights digest; once per process and folder state."""
    encoder = ssl_encoder.load_encoder(source, encoder_type).eval()
    encoder.requires_grad_(False)
    return encoder, weights_digest(encoder)


def frozen_encoder(source: str, encoder_type: str | None = None):
    """``(encoder, digest)`` for ``source`` (hub id or folder; see :func:`serkit.features.encoder.load_encoder`)."""
    return _load(str(source), encoder_type or None, _fingerprint(str(source)))


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-1 (16 hex digits) over every parameter's and buffer's name, dtype, shape and bytes.

    Computed from the loaded tensors rather than a file, so a hub id, a ``.bin`` or a ``.safetensors``
    checkpoint of the same weights give the same digest.
    """
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # 1-D: a 0-d tensor cannot be viewed as bytes
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:16]


def layer_shape(encoder) -> tuple[int, int]:
    """``(L, D)``: the number of hidden states (Transformer layers + 1) and their width."""
    return ssl_encoder.n_states(encoder), ssl_encoder.hidden_size(encoder)


def n_frames(encoder, n_samples: int) -> int:
    """Frames the encoder gives for ``n_samples`` samples (0 when fewer than it needs for one)."""
    return int(ssl_encoder.frame_lens(encoder, torch.tensor([int(n_samples)]))[0])


def ssl_layers(waveform: Tensor, encoder) -> Tensor:
    """All hidden states of one mono waveform [T]: float16 [frames, L, D] (see the module docstring)."""
    if waveform.dim() != 1:
        raise SSLFeatureError(f"ssl_layers need one mono [T] waveform at a time (its true length), got shape "
                              f"{tuple(waveform.shape)}")
    if n_frames(encoder, waveform.shape[0]) < 1:
        raise SSLFeatureError(f"{waveform.shape[0]} samples are fewer than the encoder needs for one frame "
                              f"({ssl_encoder.min_samples(encoder.config)}); drop such utterances (filter utt2dur)")
    with torch.no_grad():
        states = ssl_encoder.hidden_states(encoder.eval(), waveform.to(torch.float32))
    return torch.stack(states, dim=2)[0].to(torch.float16)


def check_digest(source: str, expected: str | None, encoder_type: str | None = None) -> str:
    """The digest of the encoder at ``source``; raise :class:`SSLFeatureError` if it is not ``expected``."""
    _, digest = frozen_encoder(source, encoder_type)
    if expected is not None and expected != digest:
        raise SSLFeatureError(f"encoder {source}: its weights (digest {digest}) are not the ones this model's "
                              f"ssl_layers features were computed with (digest {expected}); point `source` at "
                              "that encoder, or re-train the probe on this one")
    return digest


@register
class SSLLayers(FeatureKind):
    """``ssl_layers``: float16 [frames, L, D] from the encoder ``source`` (read as ``encoder_type`` when its
    config.json does not say; null: as it says), pinned to its weights by ``digest``.

    Making the spec loads the frozen encoder once per process and records its digest, so the spec's
    cache name changes with the weights. A local folder is named by its absolute path, so the spec
    means the same from any directory. The encoder's geometry gives frame counts and shapes (looked up
    once per spec: :meth:`n_frames` runs for every cropped item); its weights are checked again
    wherever features are computed.
    """

    kind = "ssl_layers"
    defaults = {"source": None, "digest": None, "encoder_type": None, "input": None}

    def check(self) -> None:
        source = self.params["source"]
        if not source:
            raise FeatureError("ssl_layers: params.source must name the frozen encoder (hub id or folder; the "
                               "family sets it from encoder_source)")
        folder = Path(str(source)).expanduser()
        self.params["source"] = str(folder.resolve()) if folder.is_dir() else str(source)
        if self.params.get("encoder_type") in (None, "", "auto"):  # as config.json says: left out of the
            self.params.pop("encoder_type", None)                  # spec, so its cache name stays the same
        self.params["digest"] = check_digest(*self._encoder_args())
        self._geometry = self._encoder()
        ssl_encoder.check_sample_rate(self._geometry, self.sample_rate, self.params["source"])
        self._check_input(ssl_encoder.input_settings(self._geometry))

    def _check_input(self, actual: dict) -> None:
        """Record the encoder's input (its normalisation or Mel settings) in the spec, so another input
        gets another cache folder; refuse a spec that names another. wav2vec 2.0's normalised waveform is
        left out: specs written before the input was recorded mean it, and keep their cache name."""
        given = self.params.pop("input", None)
        if given is not None and given != actual:
            raise SSLFeatureError(f"encoder {self.params['source']}: its input is {actual}, not the {given} this "
                                  "model's ssl_layers features were computed with; point `source` at that encoder")
        if actual != LEGACY_INPUT:
            self.params["input"] = actual

    def _encoder_args(self) -> tuple:
        return self.params["source"], self.params["digest"], self.params.get("encoder_type")

    def _encoder(self):
        return frozen_encoder(self.params["source"], self.params.get("encoder_type"))[0]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return layer_shape(self._geometry)

    def n_frames(self, n_samples: int) -> int:
        return n_frames(self._geometry, n_samples)

    def _compute(self, waveform: Tensor) -> Tensor:
        check_digest(*self._encoder_args())  # weights changed since: refuse to cache them
        return ssl_layers(waveform, self._encoder())

    def export_front_end(self, out_dir: str | Path) -> dict:
        """Copy the encoder to ``out_dir/encoder`` and name it relatively.

        An export must score audio after the encoder's source folder (or hub cache) is gone; the copy is
        checked against the spec's digest first, so an export never pairs a probe with other weights.
        """
        check_digest(*self._encoder_args())
        self._encoder().save_pretrained(Path(out_dir) / EXPORT_ENCODER_DIR)
        return {**self.to_dict(), "params": {**self.params, "source": EXPORT_ENCODER_DIR}}

    @classmethod
    def import_front_end(cls, feature: dict, export_dir: str | Path) -> dict:
        """The spec with the export's encoder copy named by absolute path (see :meth:`export_front_end`)."""
        params = dict(feature["params"])
        if params.get("source") != EXPORT_ENCODER_DIR:
            return feature
        folder = Path(export_dir) / EXPORT_ENCODER_DIR
        if not folder.is_dir():
            raise SSLFeatureError(f"{folder}: missing; this export's ssl_layers front end is its encoder copy, "
                                  "re-export the model (in the recipe folder: ./run.sh --stage 5 --stop_stage 5)")
        return {**feature, "params": {**params, "source": str(folder.resolve())}}
