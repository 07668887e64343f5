"""serkit-infer: recognise the emotion of audio files with an exported model.

Usage::

    serkit-infer exp/w2v2_mtl/export a.wav b.flac            # one line per file
    serkit-infer exp/w2v2_mtl/export data/test/wav.scp --json  # Kaldi wav.scp, JSON lines
    serkit-infer MODEL_DIR --scp wav.scp --phonemes --device cuda

Text output: ``<file or utt>  <label>  ang=0.71 hap=0.10 ...`` (plus ``phonemes=...`` with
``--phonemes``). A file that cannot be read is reported on stderr and the others are still
scored; the exit status is 1 if any file failed, 2 if the model or the arguments are unusable.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass

from tqdm import tqdm

from serkit.audio import AudioError, read_audio
from serkit.bin import one_line_errors, setup_logging
from serkit.datadir import read_map
from serkit.inference import EmotionRecognizer, Prediction

logger = logging.getLogger(__name__)
PROG = "serkit-infer"


@dataclass(frozen=True)
class Item:
    """One input: an id (the file as given, or the utterance id of a wav.scp line) and its path."""

    id: str
    path: str


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Recognise the emotion of audio files with an "
                                     "exported serkit model (see serkit.bin.export_model).")
    parser.add_argument("model_dir", help="export folder (model.pt, config.json, classes.txt, tokens.txt)")
    parser.add_argument("inputs", nargs="*", metavar="FILE",
                        help="audio files; an argument ending in .scp is read as a Kaldi wav.scp")
    parser.add_argument("--scp", action="append", default=[], metavar="FILE",
                        help="a Kaldi wav.scp ('<utt> <path>' lines); may be repeated")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--phonemes", action="store_true", help="also print the decoded emotion-phoneme string")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="files scored per forward pass (default: 8)")
    args = parser.parse_args(argv)
    if not args.inputs and not args.scp:
        parser.error("give at least one audio file or --scp FILE")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def collect_items(inputs: list[str], scps: list[str]) -> list[Item]:
    """Expand the command line into items; wav.scp files contribute one item per line."""
    items = []
    for arg in inputs:
        if arg.endswith(".scp"):
            scps = scps + [arg]
        else:
            items.append(Item(arg, arg))
    for scp in scps:
        items.extend(Item(utt, path) for utt, path in read_map(scp).items())
    return items


def format_text(item: Item, prediction: Prediction, phonemes: bool) -> str:
    probs = " ".join(f"{label}={p:.2f}" for label, p in prediction.probs.items())
    line = f"{item.id}  {prediction.label}  {probs}"
    if phonemes:
        line += f"  phonemes={' '.join(prediction.emotion_phonemes or [])}"
    return line


def format_json(item: Item, prediction: Prediction, phonemes: bool) -> str:
    phoneme_string = None
    if phonemes and prediction.emotion_phonemes is not None:
        phoneme_string = " ".join(prediction.emotion_phonemes)
    return json.dumps({"id": item.id, "path": item.path, "label": prediction.label,
                       "probs": prediction.probs, "emotion_phonemes": phoneme_string})


def read_item(recognizer: EmotionRecognizer, item: Item):
    """The item's waveform at the model's rate; raises AudioError naming the item."""
    if item.path.rstrip().endswith("|"):
        raise AudioError(f"{item.id}: wav.scp pipe commands ({item.path!r}) are not supported; "
                         f"give a path to an audio file")
    waveform, _ = read_audio(item.path, target_sr=recognizer.sample_rate)
    recognizer.check_length(waveform, item.path if item.id == item.path else f"{item.id} ({item.path})")
    return waveform


def score(recognizer: EmotionRecognizer, items: list[Item], batch_size: int, as_json: bool,
          phonemes: bool) -> int:
    """Score items in batches, printing results in input order; returns the number of failures."""
    failures = 0
    batches = range(0, len(items), batch_size)
    for start in tqdm(batches, desc="scoring", unit="batch", disable=None, file=sys.stderr):
        readable, waveforms = [], []
        for item in items[start:start + batch_size]:
            try:
                waveforms.append(read_item(recognizer, item))
                readable.append(item)
            except AudioError as error:
                failures += 1
                print(f"{PROG}: error: {error}", file=sys.stderr)
        for item, prediction in zip(readable, recognizer.predict_batch(waveforms)):
            print(format_json(item, prediction, phonemes) if as_json else format_text(item, prediction, phonemes),
                  flush=True)
    return failures


@one_line_errors(PROG, exit_code=2)  # the inputs or the model are unusable (unreadable files are counted)
def main(argv=None) -> int:
    setup_logging(timestamps=False)
    args = parse_args(argv)
    items = collect_items(args.inputs, args.scp)
    recognizer = EmotionRecognizer.from_export(args.model_dir, device=args.device)
    if args.phonemes and not recognizer.has_phoneme_head:
        logger.warning("this model has no phoneme head; --phonemes prints nothing")
    failures = score(recognizer, items, args.batch_size, args.json, args.phonemes)
    if failures:
        print(f"{PROG}: {failures} of {len(items)} input(s) failed (see errors above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
