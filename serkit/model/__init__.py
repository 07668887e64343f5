"""serkit's model families behind one contract (:mod:`serkit.model.family`, :mod:`serkit.model.registry`).

Every family's network is wrapped by :class:`SERModel`, which adds input normalisation and the shared
emotion-phoneme CTC head; :func:`mtl_loss` is the shared objective ``CE + lambda * CTC``.
"""
import importlib

# Where each public name lives. Resolved on first use (PEP 562), so importing one family, the registry
# or the experiment planner does not import transformers and every encoder (seconds per process).
_EXPORTS = {
    "EncoderConfigError": "serkit.features.encoder", "EncoderNotFoundError": "serkit.features.encoder",
    "encoder_from_config": "serkit.features.encoder", "load_encoder": "serkit.features.encoder",
    "ModelInputError": "serkit.model.common", "length_mask": "serkit.model.common",
    "CTCHead": "serkit.model.ctc_head", "ctc_greedy_decode": "serkit.model.ctc_head",
    "phoneme_ctc_loss": "serkit.model.ctc_head",
    "ModelFamily": "serkit.model.family",
    "UnknownFamilyError": "serkit.model.registry", "family_names": "serkit.model.registry",
    "get_family": "serkit.model.registry",
    "InputNorm": "serkit.model.ser_model", "NetworkOutput": "serkit.model.ser_model",
    "SERModel": "serkit.model.ser_model", "SEROutput": "serkit.model.ser_model", "mtl_loss": "serkit.model.ser_model",
    "build_tiny_w2v2": "serkit.model.tiny_w2v2",
    "W2V2Network": "serkit.model.w2v2_mtl",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = ["CTCHead", "EncoderConfigError", "EncoderNotFoundError", "InputNorm", "ModelFamily",
           "ModelInputError", "NetworkOutput", "SERModel", "SEROutput", "UnknownFamilyError", "W2V2Network",
           "build_tiny_w2v2", "ctc_greedy_decode", "encoder_from_config", "family_names", "get_family",
           "length_mask", "load_encoder", "mtl_loss", "phoneme_ctc_loss"]
