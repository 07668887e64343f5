"""Stage 1 for the character / BPE CTC targets: the transcript as characters or sentencepiece units.

The emotion-phoneme targets of Li et al. (2024) are one choice of the CTC head's targets; Cai et al.
(2021) used the transcript's characters as the auxiliary CTC task instead, and Li et al. compare
against that. So the same recipe offers both (``ctc_targets: char`` or ``bpe`` in a family's config)
and the comparison is one more row of the comparison table.

- ``char``: the normalised transcript's characters, ``|`` between words (as wav2vec 2.0 CTC
  fine-tuning does); English text goes through the same normalisation as the G2P (noise tags
  stripped, numbers expanded), other languages are lower-cased with tags and punctuation removed;
- ``bpe``: sentencepiece BPE units learned from every transcript of the data directory (ours: the
  inventory must be the same for every fold, since it sizes the output layer, and it uses no label).

Output (docs/formats.md): ``data/<dir>/utt2char`` or ``utt2bpe`` (space-separated units; an empty
value = no text, emotion task only) and ``<lang_dir>/tokens.txt`` with the CTC blank first; for
BPE also ``<lang_dir>/bpe.model``.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

from serkit.data.datadir import DataDirError, read_map, write_map
from serkit.labels import emophone
from serkit.labels.emophone import write_tokens
from serkit.data.inventory import with_blank
from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

WORD_BOUNDARY = "|"
BPE_UNITS = 128  # the default BPE vocabulary size
#: The data-dir file each CTC target kind is read from (``ctc_targets`` in a config picks the kind).
TARGET_FILES = {"emophone": emophone.TARGET_FILE, "char": "utt2char", "bpe": "utt2bpe"}
#: The kinds this module makes (emotion-phonemes are :mod:`serkit.labels.emophone`'s).
TRANSCRIPT_KINDS = ("char", "bpe")
#: Every data-dir file stage 1 writes. They follow from stage 0's labels and text, so a new stage 0
#: removes them (:func:`serkit.corpora.common.write_data_dir`) rather than leave them stale.
STAGE1_FILES = tuple(dict.fromkeys((*emophone.OUTPUT_FILES, *TARGET_FILES.values())))
_TAG_RE = re.compile(r"\[[^\]]*\]|<[^>]*>")


class CTCTargetError(SerkitError):
    """Character or BPE targets cannot be made for a data directory."""


def language_of(data_dir: Path) -> str:
    """The data directory's language (its ``language`` file; English when absent, as IEMOCAP)."""
    path = data_dir / "language"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else "en"


def normalise_words(text: str, language: str) -> list[str]:
    """The transcript's words, normalised for the language (see the module docstring)."""
    if language == "en":
        from serkit.labels.g2p import normalize_text
        return normalize_text(text)
    text = unicodedata.normalize("NFC", _TAG_RE.sub(" ", text)).lower()
    return ["".join(c for c in word if c.isalpha() or c == "'") for word in text.split()
            if any(c.isalpha() for c in word)]


def char_units(words: list[str]) -> list[str]:
    """``['hi', 'there']`` -> ``h i | t h e r e``."""
    units: list[str] = []
    for index, word in enumerate(words):
        if index:
            units.append(WORD_BOUNDARY)
        units.extend(word)
    return units


def _train_bpe(sentences: list[str], lang_dir: Path, vocab_size: int):
    import sentencepiece as spm

    if not any(sentences):
        raise CTCTargetError("no transcript has any word; BPE units need text (use ctc_targets: emophone or "
                             "mtl_lambda 0)")
    text_file = lang_dir / "bpe_train.txt"
    text_file.write_text("".join(f"{s}\n" for s in sentences if s), encoding="utf-8")
    try:
        spm.SentencePieceTrainer.train(input=str(text_file), model_prefix=str(lang_dir / "bpe"), model_type="bpe",
                                       vocab_size=vocab_size, character_coverage=1.0, hard_vocab_limit=False,
                                       bos_id=-1, eos_id=-1, unk_id=0, minloglevel=2)
    except RuntimeError as error:
        raise CTCTargetError(f"sentencepiece could not learn {vocab_size} BPE units ({error}); lower --bpe_units") from None
    finally:
        text_file.unlink()
    return spm.SentencePieceProcessor(model_file=str(lang_dir / "bpe.model"))


def make_ctc_targets(data_dir: str | Path, lang_dir: str | Path, kind: str, bpe_units: int = BPE_UNITS) -> dict:
    """Write ``utt2char``/``utt2bpe`` and the lang dir's ``tokens.txt``; returns counts for the log."""
    if kind not in TRANSCRIPT_KINDS:
        raise CTCTargetError(f"unknown CTC target kind {kind!r}; choose one of {', '.join(TRANSCRIPT_KINDS)} "
                             "(emotion-phonemes: serkit.bin.make_emophones)")
    data_dir, lang_dir = Path(data_dir), Path(lang_dir)
    if not (data_dir / "text").is_file():
        raise DataDirError(f"{data_dir / 'text'}: not found; {kind} targets need transcripts (this corpus has "
                           "none: train with mtl_lambda 0)")
    language = language_of(data_dir)
    words = {utt: normalise_words(text, language) for utt, text in read_map(data_dir / "text").items()}
    lang_dir.mkdir(parents=True, exist_ok=True)
    if kind == "char":
        units = {utt: char_units(w) for utt, w in words.items()}
    else:
        processor = _train_bpe([" ".join(w) for w in words.values()], lang_dir, bpe_units)
        units = {utt: processor.encode(" ".join(w), out_type=str) for utt, w in words.items()}
    inventory = with_blank(sorted({unit for sequence in units.values() for unit in sequence}))
    write_tokens(lang_dir / "tokens.txt", inventory)
    write_map(data_dir / TARGET_FILES[kind], {utt: " ".join(sequence) for utt, sequence in units.items()})
    empty = sum(not sequence for sequence in units.values())
    logger.info("%s targets (%s): %d utterances, %d units in the inventory, %d without text (emotion task only)",
                kind, language, len(units), len(inventory) - 1, empty)
    return {"utterances": len(units), "units": len(inventory) - 1, "empty": empty, "language": language}
