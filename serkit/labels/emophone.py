"""Emotion-phoneme labels (stage 1): ARPAbet phones -> six phone classes tagged with the emotion.

The W2V2-MTL paper (Li et al. 2024, Table 1; docs/models.md) trains an auxiliary CTC head
on coarse phone classes -- plosives/affricates S, fricatives F, nasals N, liquids/glides L,
unstressed vowels V, stressed vowels VS -- each suffixed with the utterance's emotion index, so
that the phoneme head also has to carry the emotion. ``HH AH0 L OW1`` said angrily (index 0)
becomes ``F0 V0 L0 VS0``.

Files (docs/formats.md): the data dir gets ``utt2arpabet`` and ``utt2phn`` (empty value when the
transcript has no phones, e.g. only ``[LAUGHTER]``: the utterance stays in the emotion task) and
``emophone_report.txt``; the lang dir gets ``tokens.txt`` (``<blank>`` = 0, then S F N L V VS for
each emotion in ``classes`` order).

The phone source follows the data dir's ``language`` file (absent: ``en``, as IEMOCAP data dirs
written before it existed): English text through the G2P; German from the corpus's SAMPA labels
(``utt2sampa``); Mandarin text through pypinyin (:mod:`serkit.labels.phone_sources`, docs/emophone.md).
Non-English data dirs get ``utt2phones`` (the source phones) instead of ``utt2arpabet``. A language
without a phone source, or a data dir without its source file, gets an all-empty ``utt2phn``: every
utterance trains emotion-only, and stage 1 says so. No text ever goes through another language's G2P.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from serkit.data import datadir, inventory
from serkit.errors import SerkitError
from serkit.labels.g2p import ARPABET_VOWELS, G2P, default_g2p
from serkit.labels.phone_sources import SourceStats, pinyin_classes, sampa_classes

logger = logging.getLogger(__name__)

PHONE_CLASSES = ("S", "F", "N", "L", "V", "VS")
_CONSONANT_CLASS = {
    **dict.fromkeys("B D G K P T CH JH".split(), "S"),
    **dict.fromkeys("DH F HH S SH TH V Z ZH".split(), "F"),
    **dict.fromkeys("M N NG".split(), "N"),
    **dict.fromkeys("L R W Y".split(), "L"),
}
REPORT_NAME = "emophone_report.txt"
#: The data-dir files this stage writes: the emotion-phoneme targets, the phones they come from
#: (ARPAbet for English, the source's phones for other languages) and the report.
TARGET_FILE = "utt2phn"
ARPABET_FILE = "utt2arpabet"
PHONES_FILE = "utt2phones"
OUTPUT_FILES = (ARPABET_FILE, PHONES_FILE, TARGET_FILE, REPORT_NAME)
#: Languages with a phone source besides English, and the data-dir file each needs.
SOURCES = {"de": ("utt2sampa", "the corpus's SAMPA label files (Emo-DB lablaut/, copied by stage 0)"),
           "zh": ("text", "pypinyin initials and finals of the Chinese text")}


class EmophoneError(SerkitError):
    """A phone, emotion label or token inventory that the emotion-phoneme scheme cannot use."""


def phone_class(arpabet: str) -> str:
    """The Table 1 class of one ARPAbet phone (vowels must carry a stress digit 0, 1 or 2)."""
    if arpabet in _CONSONANT_CLASS:
        return _CONSONANT_CLASS[arpabet]
    base, stress = arpabet[:-1], arpabet[-1:]
    if base in ARPABET_VOWELS and stress in ("0", "1", "2"):
        return "V" if stress == "0" else "VS"
    if arpabet in ARPABET_VOWELS:
        raise EmophoneError(f"vowel {arpabet!r} has no stress digit (expected e.g. {arpabet}0 or {arpabet}1)")
    raise EmophoneError(f"unknown ARPAbet phone {arpabet!r} (not in Table 1 of the W2V2-MTL paper)")


def emotion_phonemes(phones: Sequence[str], emotion_index: int) -> list[str]:
    """Map phones to their class tokens, all suffixed with ``emotion_index``."""
    if not isinstance(emotion_index, int) or emotion_index < 0:
        raise EmophoneError(f"emotion index must be a non-negative integer, got {emotion_index!r}")
    return [f"{phone_class(phone)}{emotion_index}" for phone in phones]


def make_token_inventory(n_emotions: int) -> list[str]:
    """The CTC blank, then S F N L V VS for each emotion 0..n-1 (list position = token index)."""
    if n_emotions < 1:
        raise EmophoneError(f"need at least one emotion class, got {n_emotions}")
    return inventory.with_blank(f"{cls}{e}" for e in range(n_emotions) for cls in PHONE_CLASSES)


def write_tokens(path: str | Path, tokens: Sequence[str]) -> None:
    """Write ``tokens.txt`` (serkit.data.inventory owns the format)."""
    try:
        inventory.write_tokens(path, tokens)
    except inventory.InventoryError as error:
        raise EmophoneError(str(error)) from None


def read_tokens(path: str | Path) -> dict[str, int]:
    """``tokens.txt`` as token -> index (serkit.data.inventory owns the format and its checks)."""
    try:
        return {token: index for index, token in enumerate(inventory.read_tokens(path))}
    except inventory.InventoryError as error:
        raise EmophoneError(f"{error} (regenerate it in the recipe folder: ./run.sh --stage 1 --stop_stage 1)") from None


@dataclass
class EmophoneReport:
    """What stage 1 did to one data dir."""

    n_utterances: int = 0
    n_phones: int = 0
    empty: list[str] = field(default_factory=list)
    oov_counts: Counter = field(default_factory=Counter)
    report_path: Path | None = None


def label_data_dir(data_dir: str | Path, lang_dir: str | Path, g2p: G2P | None = None) -> EmophoneReport:
    """Write ``utt2arpabet``, ``utt2phn`` and ``emophone_report.txt`` for ``data_dir`` and
    ``lang_dir/tokens.txt``; then validate the data dir.

    Every output is recomputed from ``text``/``utt2emo``/``classes`` and written atomically, so a
    rerun (after a crash or an edit of the inputs) is safe and gives the same files.
    """
    data_dir, lang_dir = Path(data_dir), Path(lang_dir)
    texts, emotion_index, classes = _read_inputs(data_dir)
    _install_tokens(lang_dir / "tokens.txt", make_token_inventory(len(classes)))
    language_file = data_dir / "language"
    language = datadir.read_list(language_file)[0] if language_file.is_file() else "en"
    if language != "en":
        return _label_other_language(data_dir, language, texts, emotion_index)
    g2p = g2p or default_g2p()

    report = EmophoneReport(n_utterances=len(texts))
    utt2arpabet: dict[str, str] = {}
    utt2phn: dict[str, str] = {}
    for utt in tqdm(datadir.c_sorted(texts), desc="emotion phonemes", unit="utt"):
        result = g2p.convert(texts[utt])
        utt2arpabet[utt] = " ".join(result.phones)
        utt2phn[utt] = " ".join(emotion_phonemes(result.phones, emotion_index[utt]))
        report.n_phones += len(result.phones)
        report.oov_counts.update(result.oov)
        if not result.phones:
            report.empty.append(utt)
    datadir.write_map(data_dir / ARPABET_FILE, utt2arpabet)
    datadir.write_map(data_dir / TARGET_FILE, utt2phn)
    report.report_path = data_dir / REPORT_NAME
    _write_report(report, texts, g2p)
    _log_summary(report)
    datadir.validate_data_dir(data_dir)
    return report


def _label_other_language(data_dir: Path, language: str, texts: dict[str, str],
                          emotion_index: dict[str, int]) -> EmophoneReport:
    """German (SAMPA labels) or Mandarin (pinyin) phones, or emotion-only with a clear message."""
    report = EmophoneReport(n_utterances=len(texts))
    stats = SourceStats()
    source_file, source_text = SOURCES.get(language, (None, None))
    if source_file is None or not (data_dir / source_file).is_file():
        why = (f"language {language!r} has no phone source in serkit" if source_file is None
               else f"{data_dir / source_file} is missing ({source_text})")
        logger.warning("%s: no phone labels (%s; English G2P is never used for other languages): utt2phn is written "
                       "empty and every utterance trains EMOTION-ONLY; train with lambda 0 (--lambdas 0) or add a "
                       "phone source (docs/emophone.md)", data_dir, why)
        datadir.write_map(data_dir / TARGET_FILE, {utt: "" for utt in texts})
        report.empty = datadir.c_sorted(texts)
        report.report_path = data_dir / REPORT_NAME
        datadir.write_list(report.report_path, [f"utterances {len(texts)}", "phones 0",
                                                f"emotion-only: {why}; no G2P of another language is used"])
        datadir.validate_data_dir(data_dir)
        return report
    sources = datadir.read_map(data_dir / source_file)
    utt2phones, utt2phn = {}, {}
    for utt in datadir.c_sorted(texts):
        if language == "de":
            phones = sources[utt].split()
            classes = sampa_classes(phones, stats)
        else:
            phones, classes = pinyin_classes(sources[utt], stats)
        utt2phones[utt] = " ".join(phones)
        utt2phn[utt] = " ".join(f"{cls}{emotion_index[utt]}" for cls in classes)
        report.n_phones += len(classes)
        if not classes:
            report.empty.append(utt)
    datadir.write_map(data_dir / PHONES_FILE, utt2phones)
    datadir.write_map(data_dir / TARGET_FILE, utt2phn)
    report.report_path = data_dir / REPORT_NAME
    datadir.write_list(report.report_path, [
        f"utterances {report.n_utterances}", f"phones {report.n_phones}",
        f"utterances_without_phones {len(report.empty)}", f"language {language}: phone source {source_text}",
        *(f"rule {rule}: {n} utterances" for rule, n in sorted(stats.rule.items())), "",
        "# utterances without phones (kept, empty utt2phn value)", *report.empty, "",
        "# labels or characters without a phone class (left out): <count> <label>",
        *(f"{n} {label}" for label, n in stats.unknown.most_common())])
    logger.info("emotion phonemes (%s, %s): %d utterances, %d phones, %d without phones; report: %s", language,
                source_text, report.n_utterances, report.n_phones, len(report.empty), report.report_path)
    if report.empty:
        logger.warning("%d utterance(s) have no phones (kept with an empty utt2phn, emotion-only), e.g. %s",
                       len(report.empty), ", ".join(report.empty[:5]))
    datadir.validate_data_dir(data_dir)
    return report


def _read_inputs(data_dir: Path) -> tuple[dict[str, str], dict[str, int], list[str]]:
    """Read ``text``, ``utt2emo`` and ``classes``; check they agree (every error names the file)."""
    texts = datadir.read_map(data_dir / "text")
    utt2emo = datadir.read_map(data_dir / "utt2emo")
    classes_file = data_dir / inventory.CLASSES_FILE
    try:
        classes = inventory.read_classes(classes_file)
    except inventory.InventoryError as error:
        raise EmophoneError(str(error)) from None
    only_text = sorted(set(texts) - set(utt2emo))
    only_emo = sorted(set(utt2emo) - set(texts))
    if only_text or only_emo:
        raise EmophoneError(
            f"{data_dir}: 'text' and 'utt2emo' list different utterances ({len(only_text)} only in "
            f"text, e.g. {only_text[:3]}; {len(only_emo)} only in utt2emo, e.g. {only_emo[:3]}); "
            f"fix in the recipe folder: . ./path.sh && python -m serkit.bin.validate_data_dir {data_dir} --fix")
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted(utt for utt, label in utt2emo.items() if label not in index)
    if unknown:
        raise EmophoneError(
            f"{data_dir / 'utt2emo'}: {len(unknown)} utterance(s) have a label missing from "
            f"{classes_file} (e.g. {unknown[0]} -> {utt2emo[unknown[0]]!r}); "
            "fix the class map or the classes file")
    return texts, {utt: index[label] for utt, label in utt2emo.items()}, classes


def _install_tokens(path: Path, inventory: list[str]) -> None:
    """Write ``tokens.txt``, or check that an existing one is the same inventory.

    A lang dir may be shared by several data dirs; silently overwriting a different inventory
    would make earlier models' token indices meaningless, so a mismatch is an error.
    """
    if path.exists():
        existing = read_tokens(path)
        if sorted(existing, key=existing.get) != inventory:
            raise EmophoneError(
                f"{path}: holds a different token inventory ({len(existing)} tokens) than this data "
                f"dir's classes need ({len(inventory)}); use another --lang dir or delete the file")
        return
    write_tokens(path, inventory)


def _write_report(report: EmophoneReport, texts: dict[str, str], g2p: G2P) -> None:
    """Human-readable account: totals, G2P path, utterances without phones, OOV words."""
    tagger = "yes" if g2p.tagger is not None else "no (first CMU pronunciation)"
    lines = [
        f"utterances {report.n_utterances}",
        f"phones {report.n_phones}",
        f"utterances_without_phones {len(report.empty)}",
        f"oov_words {len(report.oov_counts)} distinct, {sum(report.oov_counts.values())} tokens",
        f"g2p dictionary=cmudict({len(g2p.dictionary)} words) homographs_by_pos={tagger} "
        "oov=g2p-en neural model",
        "",
        "# utterances without phones (kept, empty utt2phn value): <utt> <transcript>",
        *(f"{utt} {texts[utt]}" for utt in report.empty),
        "",
        "# OOV words (pronounced by the neural model): <count> <word> <phones>",
        *(f"{count} {word} {' '.join(g2p.phonemize(word))}"
          for word, count in sorted(report.oov_counts.items(), key=lambda item: (-item[1], item[0]))),
    ]
    datadir.write_list(report.report_path, lines)


def _log_summary(report: EmophoneReport) -> None:
    logger.info("emotion phonemes: %d utterances, %d phones, %d OOV words (%d tokens); report: %s",
                report.n_utterances, report.n_phones, len(report.oov_counts),
                sum(report.oov_counts.values()), report.report_path)
    if report.empty:
        logger.warning("%d utterance(s) have no phones (kept with an empty utt2phn), e.g. %s; "
                       "listed in %s", len(report.empty), ", ".join(report.empty[:5]), report.report_path)
