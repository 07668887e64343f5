"""A small synthetic corpus in the exact IEMOCAP_full_release layout, spoken by espeak-ng.

Why: the real IEMOCAP cannot be downloaded by tests or CI, yet serkit's IEMOCAP data preparation
must be exercised on the real file formats, traps included, and the demo recipe needs speech whose
emotion a model can learn. This module writes such a corpus::

    <out>/IEMOCAP_full_release/Session1..5/
        dialog/EmoEvaluation/<dialog>.txt   (+ Categorical/, Attribute/, Self-evaluation/ sub-folders)
        dialog/transcriptions/<dialog>.txt
        dialog/wav/<dialog>.wav             (the whole dialog: its turns with pauses between them)
        sentences/wav/<dialog>/<utt>.wav    (16 kHz mono 16-bit, one file per labelled turn)
    <out>/manifest.tsv                      (ground truth, one row per sentence wav)
    <out>/.done                             (JSON: the parameters; a rerun with the same ones is a no-op)

Speakers: 10 = 5 sessions x {F, M}, each a fixed espeak-ng voice (female ``en-us+f1..f5``, male
``en-us+m1, m2, m3, m4, m6``) with its own small pitch/rate/volume offsets.

Emotions are rendered through prosody only (the words come from one shared pool of emotion-neutral
sentences): anger fast and loud, happiness/excitement high-pitched with a wide pitch range, sadness
slow, quiet, low and flat with pauses between words, neutral in between. Every utterance draws its
parameters around its emotion's mean with a spread wide enough that the classes overlap.

Label distribution, per speaker (defaults in brackets):
  * ``utts_per_speaker`` (24) four-class utterances, split evenly over neu / hap-class / ang / sad
    (a remainder goes to the classes in that order); the hap-class half ``hap``, half ``exc``
    (exc is merged into hap downstream; an odd one goes to hap for F, exc for M speakers), so by
    default neu 6, hap 3, exc 3, ang 6, sad 6;
  * ``others_per_speaker`` (4) more with codes outside the four classes, read on from where the
    previous speaker stopped in the cycle fru xxx fru xxx sur fea dis oth (default corpus: fru 10,
    xxx 10, sur 5, fea 5, dis 5, oth 5);
  * one unlabelled ``XX`` turn (no EmoEvaluation block, no sentence wav) in every second dialog,
    one odd transcript line without id or time (``M: Yeah.``) in the others, and noise tags
    (``[LAUGHTER]``, ``[BREATHING]``, ``[GARBAGE]``) in about one turn in six and in every XX turn.
Dialogs: ``dialogs_per_session`` (4) a session; session 3 starts with ``Ses03M_impro05a`` and
``Ses03M_impro05b`` and session 5's second dialog is ``Ses05M_script01_1b`` (the suffixed names of
the real corpus). Each speaker's utterances are spread over all dialogs of the session, so both
actors speak in every dialog whoever started it.

Everything is a function of the parameters and the seed: the same seed gives byte-identical files.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import random
import shutil
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from serkit.data.audio import resample
from serkit.errors import SerkitError
from serkit.synth.espeak import ESPEAK_SAMPLE_RATE, Prosody, SynthRequest, synthesize_isolated
from serkit.synth.sentences import FILLERS, NOISE_TAGS, SENTENCES, strip_noise_tags

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SAMPLE_RATE = 16000
CORPUS_DIR = "IEMOCAP_full_release"
MANIFEST_NAME = "manifest.tsv"
DONE_NAME = ".done"
MANIFEST_COLUMNS = (
    "utt", "speaker", "gender", "session", "dialog", "code", "start", "end", "duration", "text",
    "voice", "rate", "volume", "pitch", "pitch_range", "word_gap",
)
FOUR_CLASSES = ("neu", "hap", "ang", "sad")
OTHER_CODE_CYCLE = ("fru", "xxx", "fru", "xxx", "sur", "fea", "dis", "oth")
LABEL_WORDS = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness", "ang": "Anger",
    "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "dis": "Disgust", "oth": "Other",
}
EMOEVALUATION_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
_COMMENTS = ("curious", "annoyed", "tired", "mildly amused", "sarcastic", "hesitant")
_TIME_STEP = 16  # samples: turn boundaries fall on whole milliseconds, so 4-decimal times are exact


class MiniIemocapError(SerkitError):
    """Bad generator parameters, or an output folder that holds something else."""


@dataclass(frozen=True)
class Speaker:
    """One synthetic actor: an espeak-ng voice plus personal prosody offsets."""

    session: int
    gender: str  # "F" or "M"
    voice: str
    pitch_shift: int
    rate_shift: int
    volume_shift: int

    @property
    def id(self) -> str:
        """serkit's speaker id, e.g. ``Ses01M``."""
        return f"Ses{self.session:02d}{self.gender}"


SPEAKERS: tuple[Speaker, ...] = (
    Speaker(1, "F", "en-us+f1", 4, 5, 0), Speaker(1, "M", "en-us+m1", -4, -6, 6),
    Speaker(2, "F", "en-us+f2", -3, -8, 8), Speaker(2, "M", "en-us+m2", 5, 8, -5),
    Speaker(3, "F", "en-us+f3", 6, 0, -6), Speaker(3, "M", "en-us+m3", 0, 4, 3),
    Speaker(4, "F", "en-us+f4", -6, 10, 4), Speaker(4, "M", "en-us+m4", 3, -4, -3),
    Speaker(5, "F", "en-us+f5", 0, -4, -3), Speaker(5, "M", "en-us+m6", -2, 0, 0),
)
"""The ten actors, in session order; the offsets make voices of one gender differ beyond timbre."""


@dataclass(frozen=True)
class Style:
    """How an emotion sounds (mean espeak-ng parameters) and how annotators rate it (mean V, A, D)."""

    rate: float
    volume: float
    pitch: float
    pitch_range: float
    word_gap: float
    vad: tuple[float, float, float]


STYLES: dict[str, Style] = {
    "neu": Style(160, 85, 45, 35, 1.0, (3.0, 2.3, 2.5)),
    "hap": Style(176, 100, 63, 75, 0.5, (4.0, 3.2, 3.0)),
    "exc": Style(186, 108, 68, 85, 0.3, (4.2, 3.9, 3.4)),
    "ang": Style(190, 128, 57, 52, 0.3, (1.6, 4.1, 4.0)),
    "sad": Style(138, 55, 30, 15, 1.5, (1.8, 1.8, 2.0)),
    "fru": Style(172, 110, 50, 45, 0.8, (2.0, 3.3, 3.2)),
    "sur": Style(182, 105, 74, 92, 0.3, (3.4, 3.9, 2.8)),
    "fea": Style(196, 80, 70, 28, 0.3, (1.9, 3.7, 1.9)),
    "dis": Style(145, 95, 36, 40, 1.2, (1.8, 3.0, 3.5)),
    "oth": Style(165, 90, 50, 50, 1.0, (3.0, 3.0, 3.0)),
}
"""Per-emotion means; ``xxx`` (no majority) blends two of neu/hap/ang/sad/fru at random."""
_SPREAD = Style(11, 12, 7, 12, 0.8, (0.6, 0.6, 0.6))  # per-utterance standard deviations
_XXX_BLEND = ("neu", "hap", "ang", "sad", "fru")


@dataclass(frozen=True)
class Vote:
    """One evaluator line of an EmoEvaluation block (``C-E2:`` categorical or ``A-E3:`` attribute)."""

    evaluator: str  # E1..E6 (external) or F1 / M1 (the actor)
    labels: tuple[str, ...] = ()  # categorical words, e.g. ("Neutral", "Anger")
    vad: tuple[int, int, int] | None = None  # attribute ratings 1..5
    comment: str = ""


@dataclass
class Turn:
    """A speaker turn of a dialog; ``code`` is None for an unlabelled ``XX`` turn."""

    utt: str
    speaker: Speaker
    code: str | None
    text: str
    request: SynthRequest
    votes: list[Vote] = field(default_factory=list)
    start: int = 0  # sample index at 16 kHz in the dialog wav, set when the dialog is assembled
    end: int = 0

    @property
    def labelled(self) -> bool:
        return self.code is not None


@dataclass
class Dialog:
    """One dialog: its turns in time order plus the odd transcript lines to slip in."""

    name: str
    session: int
    turns: list[Turn]
    odd_lines: list[tuple[int, str]]  # (position among transcript lines, text)


# ----------------------------------------------------------------------------------------- planning


def _rng(seed: int, *keys: object) -> random.Random:
    """An independent generator per purpose, so one parameter change does not reshuffle everything."""
    return random.Random("/".join([str(seed), *map(str, keys)]))


def dialog_names(session: int, count: int) -> list[str]:
    """Names of a session's dialogs: impro and script in turn, F- and M-started in turn.

    Sessions 3 and 5 carry the real corpus' suffixed names, which break fixed-index parsers.
    """
    names = []
    for index in range(count):
        starter = "FM"[index % 2]
        part = index // 2
        kind = f"impro{part + 1:02d}" if index % 2 == 0 else f"script{part // 3 + 1:02d}_{part % 3 + 1}"
        names.append(f"Ses{session:02d}{starter}_{kind}")
    if session == 3:
        names[0:2] = ["Ses03M_impro05a", "Ses03M_impro05b"]
    if session == 5:
        names[1] = "Ses05M_script01_1b"
    return names


def speaker_codes(speaker_index: int, utts_per_speaker: int, others_per_speaker: int) -> list[str]:
    """The consensus codes one speaker gets (see the module docstring for the distribution)."""
    codes = []
    for position, emotion in enumerate(FOUR_CLASSES):
        count = utts_per_speaker // 4 + (1 if position < utts_per_speaker % 4 else 0)
        if emotion == "hap":  # half exc; an odd one out goes to hap or exc by speaker, so both occur
            n_exc = (count + speaker_index % 2) // 2
            codes += ["hap"] * (count - n_exc) + ["exc"] * n_exc
        else:
            codes += [emotion] * count
    start = others_per_speaker * speaker_index
    codes += [OTHER_CODE_CYCLE[(start + k) % len(OTHER_CODE_CYCLE)] for k in range(others_per_speaker)]
    return codes


def draw_prosody(code: str, speaker: Speaker, rng: random.Random) -> Prosody:
    """espeak-ng parameters for one utterance: emotion mean + speaker offset + random variation."""
    style = STYLES[code] if code != "xxx" else _blend(*rng.sample(_XXX_BLEND, 2))

    def draw(mean: float, spread: float, low: int, high: int) -> int:
        return int(min(high, max(low, round(rng.gauss(mean, spread)))))

    return Prosody(
        rate=draw(style.rate + speaker.rate_shift, _SPREAD.rate, 100, 240),
        volume=draw(style.volume + speaker.volume_shift, _SPREAD.volume, 30, 190),
        pitch=draw(style.pitch + speaker.pitch_shift, _SPREAD.pitch, 5, 95),
        pitch_range=draw(style.pitch_range, _SPREAD.pitch_range, 0, 100),
        word_gap=draw(style.word_gap, _SPREAD.word_gap, 0, 3),
    )


def _blend(first: str, second: str) -> Style:
    a, b = STYLES[first], STYLES[second]
    mean = lambda x, y: (x + y) / 2  # noqa: E731
    return Style(
        mean(a.rate, b.rate), mean(a.volume, b.volume), mean(a.pitch, b.pitch),
        mean(a.pitch_range, b.pitch_range), mean(a.word_gap, b.word_gap),
        tuple(mean(x, y) for x, y in zip(a.vad, b.vad)),
    )


def draw_votes(code: str, gender: str, rng: random.Random) -> list[Vote]:
    """Evaluator lines consistent with the consensus ``code``.

    Three external categorical votes: for a real code at least two put its word first and no other
    word is named twice; for ``xxx`` all three differ (no majority). Sometimes the actor's own vote
    (``C-F1``/``C-M1``, agreeing) and attribute ratings around the emotion's V/A/D follow.
    """
    pool = [word for key, word in LABEL_WORDS.items() if key != code]
    rng.shuffle(pool)
    evaluators = sorted(rng.sample(range(1, 7), 3))
    votes = []
    for position, number in enumerate(evaluators):
        agrees = code != "xxx" and (position < 2 or rng.random() < 0.5)
        labels = [LABEL_WORDS[code]] if agrees else [pool.pop()]
        if rng.random() < 0.2:
            labels.append(pool.pop())
        votes.append(Vote(f"E{number}", tuple(labels), comment=_comment(rng)))
    if rng.random() < 0.5:
        own = [LABEL_WORDS[code]] if code != "xxx" else [pool.pop()]
        votes.append(Vote(f"{gender}1", tuple(own), comment=_comment(rng)))
    vad_mean = (STYLES[code] if code != "xxx" else STYLES["oth"]).vad
    raters = [f"E{n}" for n in sorted(rng.sample(range(1, 7), 2))] + ([f"{gender}1"] if rng.random() < 0.5 else [])
    for rater in raters:
        rating = tuple(int(min(5, max(1, round(rng.gauss(m, _SPREAD.vad[0]))))) for m in vad_mean)
        votes.append(Vote(rater, vad=rating, comment=_comment(rng)))
    return votes


def _comment(rng: random.Random) -> str:
    return rng.choice(_COMMENTS) if rng.random() < 0.15 else ""


def _with_noise_tag(text: str, rng: random.Random) -> str:
    tag = rng.choice(NOISE_TAGS)
    return f"{tag} {text}" if rng.random() < 0.5 else f"{text} {tag}"


def plan_corpus(seed: int, utts_per_speaker: int, others_per_speaker: int, dialogs_per_session: int) -> list[Dialog]:
    """Decide every dialog, turn, text, prosody and vote (no audio yet); deterministic for a seed."""
    dialogs = []
    for session in range(1, 6):
        names = dialog_names(session, dialogs_per_session)
        per_dialog: dict[str, dict[str, list[str]]] = {name: {"F": [], "M": []} for name in names}
        for speaker in SPEAKERS:
            if speaker.session != session:
                continue
            codes = speaker_codes(SPEAKERS.index(speaker), utts_per_speaker, others_per_speaker)
            _rng(seed, "codes", speaker.id).shuffle(codes)
            for k, code in enumerate(codes):  # round robin: every speaker speaks in every dialog
                per_dialog[names[k % len(names)]][speaker.gender].append(code)
        for index, name in enumerate(names):
            dialogs.append(_plan_dialog(seed, session, name, per_dialog[name], with_xx_turn=index % 2 == 0))
    return dialogs


def _plan_dialog(seed: int, session: int, name: str, codes: dict[str, list[str]], with_xx_turn: bool) -> Dialog:
    rng = _rng(seed, "dialog", name)
    starter = name[5]  # the letter after SesNN names who started the dialog
    order = ["F"] * len(codes["F"]) + ["M"] * len(codes["M"])
    rng.shuffle(order)
    order.insert(0, order.pop(order.index(starter)))
    queues = {gender: list(codes[gender]) for gender in "FM"}
    slots: list[tuple[str, str | None]] = [(gender, queues[gender].pop(0)) for gender in order]
    odd_lines = []
    if with_xx_turn:
        slots.insert(rng.randrange(1, len(slots) + 1), (rng.choice("FM"), None))
    else:
        odd_lines.append((rng.randrange(1, len(slots) + 1), f"{rng.choice('FM')}: {rng.choice(FILLERS)}"))
    counters = {"F": 0, "M": 0}
    turns = []
    for gender, code in slots:
        speaker = next(s for s in SPEAKERS if s.session == session and s.gender == gender)
        if code is None:
            utt = f"{name}_{gender}XX0"
        else:
            utt = f"{name}_{gender}{counters[gender]:03d}"
            counters[gender] += 1
        turns.append(_plan_turn(seed, utt, speaker, code))
    return Dialog(name, session, turns, odd_lines)


def _plan_turn(seed: int, utt: str, speaker: Speaker, code: str | None) -> Turn:
    rng = _rng(seed, "turn", utt)
    if code is None:  # XX turn: a back-channel with a noise tag, spoken neutrally
        text = _with_noise_tag(rng.choice(FILLERS), rng)
        prosody = draw_prosody("oth", speaker, rng)
        votes: list[Vote] = []
    else:
        text = rng.choice(SENTENCES)
        if rng.random() < 1 / 6:
            text = _with_noise_tag(text, rng)
        prosody = draw_prosody(code, speaker, rng)
        votes = draw_votes(code, speaker.gender, rng)
    synth_seed = zlib.crc32(f"{seed}/{utt}".encode())
    request = SynthRequest(strip_noise_tags(text), speaker.voice, prosody, seed=synth_seed)
    return Turn(utt, speaker, code, text, request, votes)


# -------------------------------------------------------------------------------------------- audio


@contextmanager
def _one_torch_thread():
    """Run torch on one thread for a while (restored afterwards).

    Resampling a few seconds of audio gains nothing from threads, while OpenMP threads spinning
    against the synthesis workers made generation four times slower on a 2-core machine.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def to_16k_pcm(wave: np.ndarray, utt: str, rng: random.Random) -> np.ndarray:
    """espeak's 22,050 Hz int16 output -> 16 kHz int16, trimmed and given short silent margins.

    The length is rounded up to whole milliseconds so the turn's start and end times are exact.
    """
    samples = torch.from_numpy(wave.astype(np.float32) / 32768.0)
    signal = resample(samples, ESPEAK_SAMPLE_RATE, SAMPLE_RATE).numpy()
    voiced = np.flatnonzero(np.abs(signal) > 1e-3)
    if voiced.size == 0:
        raise MiniIemocapError(f"espeak-ng returned silence for {utt}; check the espeakng-loader installation")
    speech = signal[voiced[0] : voiced[-1] + 1]
    head = int(rng.uniform(0.05, 0.20) * SAMPLE_RATE)
    tail = int(rng.uniform(0.08, 0.25) * SAMPLE_RATE)
    total = -(-(head + speech.size + tail) // _TIME_STEP) * _TIME_STEP
    padded = np.zeros(total, dtype=np.float32)
    padded[head : head + speech.size] = speech
    return np.clip(np.round(padded * 32767.0), -32768, 32767).astype(np.int16)


def assemble_dialog(seed: int, dialog: Dialog, waves: Sequence[np.ndarray]) -> np.ndarray:
    """Lay the turns on one timeline with pauses, set each turn's start/end, add a faint noise floor.

    Sentence wavs are later cut from this signal, so they match the dialog wav sample for sample.
    """
    rng = _rng(seed, "timeline", dialog.name)
    pieces, position = [], 0
    for turn, wave in zip(dialog.turns, waves):
        pause_ms = rng.randint(250, 1000) if position else rng.randint(800, 2500)  # the first is a lead-in
        pieces.append(np.zeros(pause_ms * SAMPLE_RATE // 1000, dtype=np.int16))
        position += pieces[-1].size
        pcm = to_16k_pcm(wave, turn.utt, rng)
        turn.start, turn.end = position, position + pcm.size
        pieces.append(pcm)
        position += pcm.size
    pieces.append(np.zeros(SAMPLE_RATE, dtype=np.int16))
    signal = np.concatenate(pieces).astype(np.int32)
    noise_rng = np.random.default_rng(zlib.crc32(f"{seed}/noise/{dialog.name}".encode()))
    noise = noise_rng.normal(0.0, 6.0, signal.size)
    return np.clip(signal + np.round(noise).astype(np.int32), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------------------ writing


def _seconds(samples: int) -> float:
    return samples / SAMPLE_RATE


def emo_evaluation_text(dialog: Dialog) -> str:
    """The EmoEvaluation file: ``%`` header, then one blank-line-separated block per labelled turn."""
    lines = [EMOEVALUATION_HEADER, ""]
    for turn in dialog.turns:
        if not turn.labelled:
            continue
        ratings = [vote.vad for vote in turn.votes if vote.vad is not None]
        v, a, d = (sum(column) / len(ratings) for column in zip(*ratings))
        times = f"[{_seconds(turn.start):.4f} - {_seconds(turn.end):.4f}]"
        lines.append(f"{times}\t{turn.utt}\t{turn.code}\t[{v:.4f}, {a:.4f}, {d:.4f}]")
        for vote in turn.votes:
            if vote.vad is None:
                words = " ".join(word + ";" for word in vote.labels)
                lines.append(f"C-{vote.evaluator}:\t{words}\t({vote.comment})")
            else:
                val, act, dom = vote.vad
                lines.append(f"A-{vote.evaluator}:\tval {val}; act {act}; dom  {dom};\t({vote.comment})")
        lines.append("")
    return "\n".join(lines) + "\n"


def transcription_text(dialog: Dialog) -> str:
    """The transcription file: ``<utt> [sss.ssss-eee.eeee]: text`` a turn, plus the odd lines."""
    lines = [
        f"{turn.utt} [{_seconds(turn.start):08.4f}-{_seconds(turn.end):08.4f}]: {turn.text}" for turn in dialog.turns
    ]
    for position, text in sorted(dialog.odd_lines, reverse=True):
        lines.insert(position, text)
    return "\n".join(lines) + "\n"


def _side_files(dialog: Dialog) -> dict[str, str]:
    """Per-evaluator files of the EmoEvaluation sub-folders (which preparation must skip)."""
    files: dict[str, list[str]] = {}
    for turn in dialog.turns:
        for vote in turn.votes:
            evaluator = vote.evaluator.lower()
            if vote.evaluator[0] in "FM":
                name = f"Self-evaluation/{dialog.name}_self.txt"
            elif vote.vad is None:
                name = f"Categorical/{dialog.name}_{evaluator}_cat.txt"
            else:
                name = f"Attribute/{dialog.name}_{evaluator}_atr.txt"
            if vote.vad is None:
                body = " ".join(word + ";" for word in vote.labels)
            else:
                body = "act {1}; val {0}; dom  {2};".format(*vote.vad)
            files.setdefault(name, []).append(f"{turn.utt} :{body} ({vote.comment})")
    return {name: "\n".join(lines) + "\n" for name, lines in files.items()}


def _apple_double() -> bytes:
    """What macOS leaves as ``._name`` next to a copied file: an AppleDouble header, not audio or text."""
    return struct.pack(">II16sH", 0x00051607, 0x00020000, b"Mac OS X        ", 0) + bytes(56)


def write_dialog(root: Path, dialog: Dialog, signal: np.ndarray) -> None:
    """Write the dialog's wav, sentence wavs, EmoEvaluation (with sub-folders) and transcription."""
    dialog_dir = root / f"Session{dialog.session}" / "dialog"
    sentence_dir = root / f"Session{dialog.session}" / "sentences" / "wav" / dialog.name
    for folder in (dialog_dir / "EmoEvaluation", dialog_dir / "transcriptions", dialog_dir / "wav", sentence_dir):
        folder.mkdir(parents=True, exist_ok=True)
    (dialog_dir / "EmoEvaluation" / f"{dialog.name}.txt").write_text(emo_evaluation_text(dialog), encoding="utf-8")
    for relative, text in _side_files(dialog).items():
        (dialog_dir / "EmoEvaluation" / relative).parent.mkdir(exist_ok=True)
        (dialog_dir / "EmoEvaluation" / relative).write_text(text, encoding="utf-8")
    (dialog_dir / "transcriptions" / f"{dialog.name}.txt").write_text(transcription_text(dialog), encoding="utf-8")
    soundfile.write(dialog_dir / "wav" / f"{dialog.name}.wav", signal, SAMPLE_RATE, subtype="PCM_16")
    for turn in dialog.turns:
        if turn.labelled:
            wav = sentence_dir / f"{turn.utt}.wav"
            soundfile.write(wav, signal[turn.start : turn.end], SAMPLE_RATE, subtype="PCM_16")


def write_macos_junk(root: Path, dialogs: Sequence[Dialog]) -> int:
    """Drop ``._*`` files (as a copy from a Mac has) next to the first dialog of each session."""
    count = 0
    for dialog in dialogs:
        if dialog.name != dialog_names(dialog.session, 2)[0]:
            continue
        session_dir = root / f"Session{dialog.session}"
        first = next(turn.utt for turn in dialog.turns if turn.labelled)
        for path in (
            session_dir / "dialog" / "EmoEvaluation" / f"._{dialog.name}.txt",
            session_dir / "dialog" / "transcriptions" / f"._{dialog.name}.txt",
            session_dir / "dialog" / "wav" / f"._{dialog.name}.wav",
            session_dir / "sentences" / "wav" / dialog.name / f"._{first}.wav",
        ):
            path.write_bytes(_apple_double())
            count += 1
    return count


def manifest_rows(dialogs: Sequence[Dialog]) -> list[dict[str, str]]:
    """Ground truth: one row per labelled turn (= per sentence wav), sorted by utterance id."""
    rows = []
    for dialog in dialogs:
        for turn in dialog.turns:
            if not turn.labelled:
                continue
            p = turn.request.prosody
            values = (
                turn.utt, turn.speaker.id, turn.speaker.gender.lower(), dialog.session, dialog.name, turn.code,
                f"{_seconds(turn.start):.4f}", f"{_seconds(turn.end):.4f}", f"{_seconds(turn.end - turn.start):.4f}",
                turn.text, turn.request.voice, p.rate, p.volume, p.pitch, p.pitch_range, p.word_gap,
            )
            rows.append(dict(zip(MANIFEST_COLUMNS, map(str, values))))
    return sorted(rows, key=lambda row: row["utt"].encode())


def write_manifest(path: Path, rows: Sequence[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
        writer.writeheader()
        writer.writerows(rows)


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Read ``manifest.tsv`` (written next to IEMOCAP_full_release) as a list of column dicts."""
    path = Path(path)
    if not path.is_file():
        raise MiniIemocapError(
            f"{path}: manifest not found; generate the corpus with python -m serkit.bin.make_mini_iemocap"
        )
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise MiniIemocapError(f"{path}: unexpected header {reader.fieldnames}; regenerate the corpus")
        return list(reader)


# --------------------------------------------------------------------------------------- entry point


def _check_parameters(utts_per_speaker: int, others_per_speaker: int, dialogs_per_session: int, jobs: int) -> None:
    if utts_per_speaker < 4:
        raise MiniIemocapError(f"utts_per_speaker={utts_per_speaker}: need at least 4 (one per emotion class)")
    if others_per_speaker < 0:
        raise MiniIemocapError(f"others_per_speaker={others_per_speaker}: must be 0 or more")
    if not 2 <= dialogs_per_session <= 30:
        raise MiniIemocapError(
            f"dialogs_per_session={dialogs_per_session}: must be 2..30 (2 are needed for the suffixed dialog names)"
        )
    if utts_per_speaker + others_per_speaker < dialogs_per_session:
        raise MiniIemocapError(
            f"{utts_per_speaker + others_per_speaker} utterances a speaker cannot cover {dialogs_per_session} dialogs "
            "(both actors speak in every dialog): raise utts_per_speaker or lower dialogs_per_session"
        )
    if jobs < 1:
        raise MiniIemocapError(f"jobs={jobs}: must be at least 1")


def _finished(out_dir: Path, parameters: dict) -> bool:
    """True when ``out_dir`` already holds this exact corpus; raise if it holds anything else."""
    done = out_dir / DONE_NAME
    outputs = (out_dir / CORPUS_DIR, out_dir / MANIFEST_NAME)
    if not done.is_file():
        for path in outputs:
            if path.exists():
                raise MiniIemocapError(
                    f"{path} exists but {done} does not (an interrupted run or another corpus); "
                    "remove it or choose another --out"
                )
        return False
    try:
        recorded = json.loads(done.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        recorded = {}
    if recorded == parameters and all(path.exists() for path in outputs):
        return True
    if not isinstance(recorded, dict):
        recorded = {}
    differences = ", ".join(
        f"{key}={recorded.get(key)!r} (asked {value!r})"
        for key, value in parameters.items()
        if recorded.get(key) != value
    )
    raise MiniIemocapError(
        f"{out_dir} holds a different or incomplete mini IEMOCAP ({differences or 'files missing'}); "
        "remove the folder or choose another --out"
    )


def make_mini_iemocap(
    out_dir: str | Path,
    seed: int = 1,
    utts_per_speaker: int = 24,
    others_per_speaker: int = 4,
    dialogs_per_session: int = 4,
    jobs: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate the corpus under ``out_dir`` and return the path of its IEMOCAP_full_release folder.

    ``out_dir`` also receives ``manifest.tsv`` (the ground truth) and ``.done``. A rerun with the
    same parameters returns at once. ``jobs`` processes synthesise dialogs in parallel (default: the
    CPU count, at most 8); the output does not depend on it.
    """
    out_dir = Path(out_dir)
    jobs = jobs if jobs is not None else min(8, os.cpu_count() or 1)
    _check_parameters(utts_per_speaker, others_per_speaker, dialogs_per_session, jobs)
    parameters = {
        "generator": "serkit.synth.mini_iemocap", "version": GENERATOR_VERSION, "seed": seed,
        "utts_per_speaker": utts_per_speaker, "others_per_speaker": others_per_speaker,
        "dialogs_per_session": dialogs_per_session,
    }
    if _finished(out_dir, parameters):
        logger.info("%s is complete (same parameters); nothing to do", out_dir / CORPUS_DIR)
        return out_dir / CORPUS_DIR
    staging = out_dir / ".partial"
    shutil.rmtree(staging, ignore_errors=True)  # our own leftovers from an interrupted run
    staging.mkdir(parents=True)
    dialogs = plan_corpus(seed, utts_per_speaker, others_per_speaker, dialogs_per_session)
    batches = [[turn.request for turn in dialog.turns] for dialog in dialogs]
    results = synthesize_isolated(batches, jobs=jobs)
    bar = tqdm(results, total=len(dialogs), desc="mini IEMOCAP dialogs", unit="dialog", disable=not progress)
    with _one_torch_thread():
        for index, waves in bar:
            dialog = dialogs[index]
            write_dialog(staging / CORPUS_DIR, dialog, assemble_dialog(seed, dialog, waves))
    junk = write_macos_junk(staging / CORPUS_DIR, dialogs)
    rows = manifest_rows(dialogs)
    write_manifest(staging / MANIFEST_NAME, rows)
    os.replace(staging / CORPUS_DIR, out_dir / CORPUS_DIR)
    os.replace(staging / MANIFEST_NAME, out_dir / MANIFEST_NAME)
    staging.rmdir()
    (out_dir / DONE_NAME).write_text(json.dumps(parameters, sort_keys=True) + "\n", encoding="utf-8")
    _log_summary(rows, len(dialogs), junk, out_dir)
    return out_dir / CORPUS_DIR


def _log_summary(rows: Sequence[dict[str, str]], n_dialogs: int, junk: int, out_dir: Path) -> None:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["code"]] = counts.get(row["code"], 0) + 1
    hours = sum(float(row["duration"]) for row in rows) / 3600
    logger.info(
        "wrote %d dialogs, %d sentence wavs (%.2f h; codes %s) and %d macOS junk files to %s",
        n_dialogs, len(rows), hours, " ".join(f"{k}={v}" for k, v in sorted(counts.items())), junk,
        out_dir / CORPUS_DIR,
    )
