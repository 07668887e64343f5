"""Per-speaker feature normalisation: Kaldi's per-speaker CMVN (``compute-cmvn-stats --spk2utt``).

``normalisation: speaker`` in a family's config replaces the fold-global view of the input: every
utterance's features are standardised with the mean and standard deviation of *its speaker's*
utterances (all their frames; for eGeMAPS the one functionals row of each utterance), per dimension.
What differs between speakers (vocal tract length, recording level, habitual pitch) then moves out of
the features and what differs between an utterance and its speaker's usual voice stays, which is
what emotion is; on speaker-independent folds this is a well-known large gain for eGeMAPS.

The statistics of each split's speakers come from that split's utterances only (Kaldi computes CMVN
per data directory): a training speaker's from its training utterances, the validation speaker's
from the validation utterances, **the test speaker's from its test utterances**. That is
*transductive*: the test speaker's unlabelled audio shapes its own normalisation (no label is ever
read), as it would in a deployment that has several recordings of each speaker. A model trained this
way records ``normalisation: speaker`` in ``model_config.json`` and its export; inference then
normalises with statistics the user gives for the speaker (:class:`serkit.serving.inference.EmotionRecognizer`
``speaker_stats``; ``serkit-infer --utt2spk`` or ``--speaker-stats``), or else with the utterance's own
frames (utterance CMVN; impossible for eGeMAPS' single row, which then needs the speaker's statistics).

The normalisation applies to features the data layer computes: MFCC, log-Mel (with deltas) and
eGeMAPS functionals. The model's own input normalisation (global CMVN from the training set) still
runs on top; on per-speaker-normalised features it is nearly the identity.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch

from serkit.data.datadir import DataDirError, read_map
from serkit.errors import SerkitError
from serkit.features import FeatureStats

logger = logging.getLogger(__name__)

NORMALISATIONS = ("global", "speaker")
SPEAKER_KINDS = ("mfcc", "log_mel_deltas", "egemaps")


class NormalisationError(SerkitError):
    """A normalisation setting that cannot be used for this feature or data."""


def check_normalisation(value, feature_kind: str) -> str:
    """The config's ``normalisation`` (``global`` or ``speaker``), checked against the family's feature."""
    value = "global" if value is None else str(value)
    if value not in NORMALISATIONS:
        raise NormalisationError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {value!r}")
    if value == "speaker" and feature_kind not in SPEAKER_KINDS:
        raise NormalisationError(f"normalisation: speaker applies to {', '.join(SPEAKER_KINDS)} features; this "
                                 f"family reads {feature_kind!r} (set normalisation: global)")
    return value


def speaker_statistics(dataset, utt2spk: Mapping[str, str]) -> dict[str, FeatureStats]:
    """Per-speaker statistics over the dataset's (raw) inputs: speaker -> :class:`FeatureStats`."""
    stats: dict[str, FeatureStats] = {}
    for index, utt in enumerate(dataset.utterances):
        stats.setdefault(utt2spk[utt.utt_id], FeatureStats()).accumulate(dataset.inputs(index))
    return stats


class SpeakerNormaliser:
    """``(utterance id, features) -> features`` standardised with the utterance's speaker's statistics."""

    def __init__(self, utt2spk: Mapping[str, str], stats: Mapping[str, FeatureStats]):
        self.utt2spk, self.stats = dict(utt2spk), dict(stats)

    def __call__(self, utt_id: str, feats: torch.Tensor) -> torch.Tensor:
        return self.stats[self.utt2spk[utt_id]].normalise(feats)


def normalise_per_speaker(datasets: Mapping[str, object], data_dir: str | Path) -> None:
    """Give each dataset (split name -> :class:`serkit.data.dataio.EmotionDataset`) per-speaker CMVN over its
    own utterances (the module docstring says why per split). Reads ``utt2spk`` of ``data_dir``."""
    path = Path(data_dir) / "utt2spk"
    if not path.is_file():
        raise DataDirError(f"{path}: not found; normalisation: speaker needs each utterance's speaker")
    utt2spk = read_map(path)
    for split, dataset in datasets.items():
        missing = [utt.utt_id for utt in dataset.utterances if utt.utt_id not in utt2spk]
        if missing:
            raise DataDirError(f"{path}: {len(missing)} utterance(s) of the {split} set have no speaker "
                               f"(e.g. {missing[0]}); re-run data preparation (stage 0)")
        dataset.normaliser = None  # statistics of the raw features
        stats = speaker_statistics(dataset, utt2spk)
        dataset.normaliser = SpeakerNormaliser(utt2spk, stats)
        single = sorted(spk for spk, s in stats.items() if s.count < 2)
        logger.info("%s: per-speaker normalisation over %d speaker(s)%s", split, len(stats),
                    f"; {len(single)} with a single frame (normalised to 0): {', '.join(single)}" if single else "")
