"""serkit's model families behind one contract (:mod:`serkit.model.family`, :mod:`serkit.model.registry`).

Every family's network is wrapped by :class:`SERModel`, which adds input normalisation and the shared
emotion-phoneme CTC head; :func:`mtl_loss` is the shared objective ``CE + lambda * CTC``.
"""
from serkit.features.encoder import EncoderConfigError, EncoderNotFoundError, encoder_from_config, load_encoder
from serkit.model.common import ModelInputError, length_mask
from serkit.model.ctc_head import CTCHead, ctc_greedy_decode, phoneme_ctc_loss
from serkit.model.family import ModelFamily
from serkit.model.registry import UnknownFamilyError, family_names, get_family
from serkit.model.ser_model import InputNorm, NetworkOutput, SERModel, SEROutput, mtl_loss
from serkit.model.tiny_w2v2 import build_tiny_w2v2
from serkit.model.w2v2_mtl import W2V2Network

__all__ = ["CTCHead", "EncoderConfigError", "EncoderNotFoundError", "InputNorm", "ModelFamily",
           "ModelInputError", "NetworkOutput", "SERModel", "SEROutput", "UnknownFamilyError", "W2V2Network",
           "build_tiny_w2v2", "ctc_greedy_decode", "encoder_from_config", "family_names", "get_family",
           "length_mask", "load_encoder", "mtl_loss", "phoneme_ctc_loss"]
