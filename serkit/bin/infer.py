"""serkit-infer: recognise the emotion of audio files with an exported model.

Usage::

    serkit-infer exp/w2v2_mtl/export a.wav b.flac            # one line per file
    serkit-infer exp/w2v2_mtl/export data/test/wav.scp --json  # Kaldi wav.scp, JSON lines
    serkit-infer MODEL_DIR --scp wav.scp --phonemes --device cuda
    serkit-infer MODEL_DIR a.wav --gender f                    # a model trained with the gender prior

Text output: ``<file or utt>  <label>  ang=0.71 hap=0.10 ...``, then the outputs of the model's other
targets (:mod:`serkit.targets`): ``phonemes=...`` with ``--phonemes``, ``gender: f (given)`` or
``(predicted)`` for a model trained with the gender. A value a target takes as an input is given with
``--<target>`` (``--gender f|m``); without it, the model's own prediction is used when it has one.

A file that cannot be read, is truncated, holds NaN/infinite samples or only
zeros is reported on stderr and the others are still scored; the exit status is 1 if any file
failed, 2 if the model or the arguments are unusable. ``--json`` output is always valid JSON.

Recordings longer than one window (``--window``, ``--hop``; defaults from the model family, 8 s
without overlap) are streamed from disk and scored window by window in bounded memory; the
utterance-level result is the duration-weighted mean of the window posteriors (serkit.serving.inference).
A model trained with per-speaker normalisation (``normalisation: speaker``) normalises each input
with its speaker's statistics: ``--utt2spk FILE`` groups the inputs by speaker (statistics over all of
a speaker's inputs), ``--speaker-stats FILE.json`` gives them; without either each file is normalised
with its own statistics (not possible for eGeMAPS, which then needs one of the two).

``--timeline`` also prints each window: ``<id>  [<start>-<end>]  <label>  <probs>`` lines after
the file's line, or a ``windows`` list (start, end, label, probs) in its JSON object.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import Sequence

from tqdm import tqdm

from serkit.data.audio import AudioError
from serkit.bin import one_line_errors, setup_logging
from serkit.data.datadir import read_map
from serkit.features import N_FUNCTIONALS, FeatureStats
from serkit.serving.inference import EmotionRecognizer, InferenceError, Prediction
from serkit.targets import Target, target_classes

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
    parser.add_argument("model_dir", help="export folder (model.pt, config.json, classes.txt, ...)")
    parser.add_argument("inputs", nargs="*", metavar="FILE",
                        help="audio files; an argument ending in .scp is read as a Kaldi wav.scp")
    parser.add_argument("--scp", action="append", default=[], metavar="FILE",
                        help="a Kaldi wav.scp ('<utt> <path>' lines); may be repeated")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    for target in target_classes():
        if target.show_option:
            flag, text = target.show_option
            parser.add_argument(flag, action="store_true", dest=show_dest(target), help=text)
        if target.given_choices:
            parser.add_argument(f"--{target.name}", choices=target.given_choices, help=target.given_help)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="files scored per forward pass (default: 8)")
    parser.add_argument("--window", type=float, default=None, metavar="SECONDS",
                        help="longer recordings are scored in windows of this length (default: the family's, 8 s)")
    parser.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                        help="start a window every SECONDS (default: the family's; 8 s families: the window length)")
    parser.add_argument("--timeline", action="store_true", help="also print each window's start, end, label, probs")
    parser.add_argument("--utt2spk", metavar="FILE",
                        help="a model trained with per-speaker normalisation: '<id> <speaker>' lines for the inputs; "
                             "each speaker's features are normalised with the statistics of all its inputs")
    parser.add_argument("--speaker-stats", metavar="FILE",
                        help="a model trained with per-speaker normalisation: JSON statistics (count, mean, std) "
                             "that normalise every input (default: each file's own statistics)")
    # Options may come anywhere (serkit-infer EXPORT --json a.wav): the files are collected around them.
    args = parser.parse_intermixed_args(argv)
    if not args.inputs and not args.scp:
        parser.error("give at least one audio file or --scp FILE")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    for name in ("window", "hop"):
        if getattr(args, name) is not None and not getattr(args, name) > 0:
            parser.error(f"--{name} must be a positive number of seconds")
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


def show_dest(target: type[Target]) -> str:
    """The attribute of the parsed arguments saying whether ``target``'s output is shown."""
    return f"show_{target.name}"


def shown_targets(recognizer: EmotionRecognizer, args: argparse.Namespace) -> list[Target]:
    """The served targets whose outputs are printed: those always shown and those whose flag is given."""
    shown = [target for target in recognizer.targets
             if target.show_option is None or getattr(args, show_dest(type(target)))]
    for target in shown:
        if not target.has_output:
            logger.warning("this model has no %s output; %s prints nothing", target.name, target.show_option[0])
    return shown


def given_values(args: argparse.Namespace) -> dict[str, str]:
    """The values the user gives for targets (``--<target> VALUE``)."""
    return {target.name: getattr(args, target.name) for target in target_classes()
            if target.given_choices and getattr(args, target.name) is not None}


def format_text(item: Item, prediction: Prediction, shown: Sequence[Target], timeline: bool = False) -> str:
    line = f"{item.id}  {prediction.label}  {_probs_text(prediction.probs)}"
    line += "".join(f"  {target.output_text(prediction.outputs.get(target.name))}" for target in shown)
    if timeline:
        line += "".join(f"\n{item.id}  [{w.start:.2f}-{w.end:.2f}]  {w.label}  {_probs_text(w.probs)}"
                        for w in prediction.windows)
    return line


def _probs_text(probs: dict[str, float]) -> str:
    return " ".join(f"{label}={p:.2f}" for label, p in probs.items())


def format_json(item: Item, prediction: Prediction, targets: Sequence[Target], shown: Sequence[Target],
                timeline: bool = False) -> str:
    """One JSON object; strict JSON (no NaN), which :func:`score` guarantees by refusing non-finite results.
    Every served target adds its fields, null when not ``shown``."""
    record = {"id": item.id, "path": item.path, "label": prediction.label, "probs": prediction.probs}
    for target in targets:
        record.update(target.output_json(prediction.outputs.get(target.name) if target in shown else None))
    if timeline:
        record["windows"] = [{"start": w.start, "end": w.end, "label": w.label, "probs": w.probs}
                             for w in prediction.windows]
    return json.dumps(record, allow_nan=False)


def item_name(item: Item) -> str:
    return item.path if item.id == item.path else f"{item.id} ({item.path})"


def read_item(recognizer: EmotionRecognizer, item: Item):
    """The item's waveform at the model's rate, or None for a long recording (scored in windows);
    raises AudioError naming the item."""
    if item.path.rstrip().endswith("|"):
        raise AudioError(f"{item.id}: wav.scp pipe commands ({item.path!r}) are not supported; "
                         f"give a path to an audio file")
    if recognizer.is_long(item.path):
        return None
    return recognizer.read_file(item.path)


def score(recognizer: EmotionRecognizer, items: list[Item], batch_size: int, as_json: bool,
          shown: Sequence[Target], timeline: bool = False, speakers: dict | None = None) -> int:
    """Score items (short ones in batches, long ones in windows), printing results in input order;
    returns the number of failures (each reported on stderr, naming the item). ``speakers`` maps item
    ids to the speaker statistics that normalise them (:func:`speaker_stats_by_item`); ``shown``: the
    targets whose outputs are printed (:func:`shown_targets`)."""
    failures = 0
    pending: list[tuple[Item, object]] = []

    def report(item: Item, prediction: Prediction) -> None:
        nonlocal failures
        if not prediction.finite:  # never print NaN: it is not a result, and not JSON
            failures += 1
            print(f"{PROG}: error: {item_name(item)}: the model gave non-finite posteriors; check the model",
                  file=sys.stderr)
            return
        if as_json:
            print(format_json(item, prediction, recognizer.targets, shown, timeline), flush=True)
        else:
            print(format_text(item, prediction, shown, timeline), flush=True)

    def flush() -> None:
        for (item, _), prediction in zip(pending, recognizer.predict_batch([w for _, w in pending], timeline=True)):
            report(item, prediction)
        pending.clear()

    for item in tqdm(items, desc="scoring", unit="file", disable=None, file=sys.stderr):
        if speakers is not None and speakers.get(item.id) is not recognizer.speaker_stats:
            flush()  # a batch holds one speaker's items: they share the statistics
            recognizer.speaker_stats = speakers.get(item.id)
        try:
            waveform = read_item(recognizer, item)
            if waveform is None:
                flush()
                report(item, recognizer.predict_file(item.path))
            else:
                pending.append((item, waveform))
        except (AudioError, InferenceError) as error:
            failures += 1
            message = str(error)
            print(f"{PROG}: error: {message if item.path in message else f'{item_name(item)}: {message}'}",
                  file=sys.stderr)
        if len(pending) >= batch_size:
            flush()
    flush()
    return failures


def speaker_stats_by_item(recognizer: EmotionRecognizer, items: list[Item], utt2spk_file: str) -> dict:
    """Item id -> the statistics of its speaker's inputs (utt2spk names the speakers; transductive, as in
    training: no label is read). Inputs that cannot be read are left out here and reported when scored."""
    utt2spk = read_map(utt2spk_file)
    missing = [item.id for item in items if item.id not in utt2spk]
    if missing:
        raise InferenceError(f"--utt2spk {utt2spk_file}: no speaker for {len(missing)} input(s) (e.g. {missing[0]})")
    by_speaker: dict[str, list[Item]] = {}
    for item in items:
        by_speaker.setdefault(utt2spk[item.id], []).append(item)
    stats = {}
    for speaker, group in by_speaker.items():
        speaker_stats = FeatureStats()
        for item in group:
            try:
                speaker_stats.accumulate(recognizer.feature.compute(recognizer.read_file(item.path),
                                                                    recognizer.sample_rate))
            except AudioError:
                continue
        if speaker_stats.count:
            stats.update({item.id: speaker_stats for item in group})
        if speaker_stats.count == 1:
            logger.warning("speaker %s has a single feature row (one eGeMAPS input): it normalises to zeros", speaker)
    return stats


def speaker_options(recognizer: EmotionRecognizer, args, items: list[Item]) -> dict | None:
    """Apply --speaker-stats / --utt2spk to a model trained with per-speaker normalisation."""
    if recognizer.normalisation != "speaker":
        if args.utt2spk or args.speaker_stats:
            logger.info("this model was trained without per-speaker normalisation; --utt2spk / --speaker-stats "
                        "are not needed")
        return None
    if args.speaker_stats:
        with open(args.speaker_stats, encoding="utf-8") as handle:
            recognizer.speaker_stats = FeatureStats.from_dict(json.load(handle))
        return None
    if args.utt2spk:
        return speaker_stats_by_item(recognizer, items, args.utt2spk)
    if recognizer.feature is not None and recognizer.feature.frame_shape == (N_FUNCTIONALS,):
        raise InferenceError("this model was trained with per-speaker normalisation of eGeMAPS functionals (one row "
                             "per file, which cannot normalise itself): give --utt2spk FILE (several files of each "
                             "speaker) or --speaker-stats FILE.json")
    logger.warning("this model was trained with per-speaker normalisation; without --utt2spk or --speaker-stats each "
                   "file is normalised with its own statistics")
    return None


@one_line_errors(PROG, exit_code=2)  # the inputs or the model are unusable (unreadable files are counted)
def main(argv=None) -> int:
    setup_logging(timestamps=False)
    args = parse_args(argv)
    items = collect_items(args.inputs, args.scp)
    recognizer = EmotionRecognizer.from_export(args.model_dir, device=args.device, window_s=args.window,
                                               hop_s=args.hop, given=given_values(args))
    shown = shown_targets(recognizer, args)
    speakers = speaker_options(recognizer, args, items)
    failures = score(recognizer, items, args.batch_size, args.json, shown, args.timeline, speakers)
    if failures:
        print(f"{PROG}: {failures} of {len(items)} input(s) failed (see errors above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
