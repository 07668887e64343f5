"""The W2V2-MTL network: wav2vec 2.0 + layer fusion + emotion head + emotion-phoneme CTC head."""
from serkit.model.encoder import EncoderConfigError, EncoderNotFoundError, encoder_from_config, load_encoder
from serkit.model.tiny_w2v2 import build_tiny_w2v2
from serkit.model.w2v2_mtl import (MTLOutput, ModelInputError, W2V2MultiTask, ctc_greedy_decode, mtl_loss,
                                   phoneme_ctc_loss)

__all__ = ["EncoderConfigError", "EncoderNotFoundError", "MTLOutput", "ModelInputError", "W2V2MultiTask",
           "build_tiny_w2v2", "ctc_greedy_decode", "encoder_from_config", "load_encoder", "mtl_loss",
           "phoneme_ctc_loss"]
