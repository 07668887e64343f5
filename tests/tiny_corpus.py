"""Write tiny synthetic corpora (data, lang and fold directories of docs/formats.md), for tests.

Utterance ``i`` is ``spk{i // 4}-u{i:02d}``: four per speaker, one per emotion (``CLASSES[i % 4]``),
with the emotion-phoneme string ``F<e> V<e> L<e> VS<e>``. Each test module picks the size, the
durations, the audio, the fold split and which utterances have no phones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Collection, Mapping

import numpy as np
import soundfile

CLASSES = ["ang", "hap", "sad", "neu"]
TOKENS = ["<blank>"] + [f"{p}{e}" for e in range(len(CLASSES)) for p in ("S", "F", "N", "L", "V", "VS")]

#: Makes the waveform of utterance ``index`` (emotion ``emo``) lasting ``seconds`` at ``rate`` Hz.
Waveform = Callable[[int, int, float, int], np.ndarray]


def write_map(path: Path, mapping: Mapping) -> None:
    path.write_text("".join(f"{key} {value}\n" for key, value in sorted(mapping.items())), encoding="utf-8")


def noisy_tones(base_hz: float, step_hz: float, seed: int = 0) -> Waveform:
    """A tone at ``base_hz + step_hz * emo`` plus white noise drawn from one generator seeded with
    ``seed``, in the order the utterances are written."""
    rng = np.random.default_rng(seed)

    def waveform(index: int, emo: int, seconds: float, rate: int) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        return 0.3 * np.sin(2 * np.pi * (base_hz + step_hz * emo) * t) + 0.05 * rng.standard_normal(t.size)

    return waveform


def write_tiny_corpus(root: Path, n_utts: int, seconds: Callable[[int], float], waveform: Waveform,
                      splits: Mapping[str, range], phoneless: Collection[int] = (),
                      rates: Mapping[str, int] | None = None) -> dict[str, Path]:
    """Write ``root/{data,lang,fold,wav}`` and return those four folders by name.

    ``seconds(i)`` is utterance i's duration (utt2dur keeps 3 decimals); ``splits`` maps
    train/valid/test to the utterance indices of the fold's lists; utterances in ``phoneless``
    get an empty utt2phn value; ``rates`` maps utterance ids to a wav sample rate other than 16 kHz.
    """
    rates = rates or {}
    folders = {name: root / name for name in ("data", "lang", "fold", "wav")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    data, wavs = folders["data"], folders["wav"]
    utts = [f"spk{i // 4}-u{i:02d}" for i in range(n_utts)]
    wav_scp, utt2emo, utt2dur, utt2phn = {}, {}, {}, {}
    for i, utt in enumerate(utts):
        emo, duration, rate = i % 4, seconds(i), rates.get(utt, 16000)
        soundfile.write(wavs / f"{utt}.wav", waveform(i, emo, duration, rate).astype(np.float32), rate)
        wav_scp[utt], utt2emo[utt], utt2dur[utt] = wavs / f"{utt}.wav", CLASSES[emo], f"{duration:.3f}"
        utt2phn[utt] = "" if i in phoneless else f"F{emo} V{emo} L{emo} VS{emo}"
    utt2spk = {utt: utt.split("-")[0] for utt in utts}
    for name, mapping in (("wav.scp", wav_scp), ("utt2emo", utt2emo), ("utt2dur", utt2dur), ("utt2phn", utt2phn),
                          ("utt2spk", utt2spk)):
        write_map(data / name, mapping)
    (data / "classes").write_text("".join(f"{c}\n" for c in CLASSES), encoding="utf-8")
    (folders["lang"] / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(TOKENS)), encoding="utf-8")
    for split, indices in splits.items():
        (folders["fold"] / split).write_text("".join(f"{utts[i]}\n" for i in indices), encoding="utf-8")
    return folders


def tiny_w2v2_hparams(corpus: Mapping[str, Path], fold: Path, epochs: int = 6) -> dict:
    """The shared W2V2-MTL config for a few epochs of one fold of a tiny corpus (its ``encoder`` built
    with ``build_tiny_w2v2``), emotion only; a test adds its target's options as a variant config would."""
    from serkit.bin.train import load_hparams

    conf = Path(__file__).resolve().parents[1] / "conf" / "w2v2_mtl.yaml"
    overrides = {"data_dir": str(corpus["data"]), "fold_dir": str(corpus["fold"]), "output_folder": str(fold),
                 "encoder_source": str(corpus["encoder"]), "batch_size": 4, "num_workers": 0,
                 "ckpt_interval_minutes": 0, "number_of_epochs": epochs, "mtl_lambda": 0.0, "lr_heads": 0.01}
    return load_hparams(str(conf), overrides)
