"""Cross-validation folds (stage 2): which utterances train, validate and test each model.

Protocols (docs/formats.md, ``folds_dir/<protocol>/fold<NN>/{train,valid,test}`` + ``folds.tsv``):

``loso`` -- leave one speaker out, one fold per speaker in sorted order (fold01 = first speaker).
    test = that speaker; valid = the other speaker(s) of the same session (IEMOCAP: the dialogue
    partner), so checkpoints are never chosen on the test speaker; train = everyone else. When the
    session has no other speaker, valid = one other speaker drawn with ``random.Random`` seeded by
    ``(seed, test speaker)``: still speaker-disjoint from test and train, and reproducible.
``loso_session`` -- leave one session out, one fold per session. test = the session's speakers;
    valid = 10 % of the *training* utterances, stratified by (speaker, emotion) and seeded. The
    valid speakers also appear in train, which is acceptable because valid only selects the
    checkpoint: the test speakers stay unseen. (Holding out whole speakers would remove two of
    the eight training speakers.)
``random`` -- SpeechBrain-style speaker-DEPENDENT 80/10/10 utterance split, stratified by emotion
    and seeded. Test speakers are seen in training, so its numbers are optimistic: use it only
    to compare with published numbers that used it.

Stratified sampling takes ``round(fraction * n)`` utterances in all and gives each stratum its
proportional share (largest remainders get the leftover units), so small strata are not
systematically rounded away.

After writing, each fold is read back with :func:`load_fold` and checked with
:func:`check_no_leakage`.
"""
from __future__ import annotations

import logging
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from serkit import datadir
from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

PROTOCOLS = ("loso", "loso_session", "random")
SETS = ("train", "valid", "test")
TSV_HEADER = ("fold", "test_speakers", "valid_speakers", "n_train", "n_valid", "n_test", "valid_rule")


class FoldError(SerkitError):
    """Fold inputs are inconsistent, or a fold leaks utterances or speakers."""


@dataclass
class Fold:
    """One train/valid/test split; ``valid_rule`` says in words how valid was chosen."""

    name: str
    train: list[str]
    valid: list[str]
    test: list[str]
    valid_rule: str

    def sets(self) -> dict[str, list[str]]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


def _fold(index: int, train: Iterable[str], valid: Iterable[str], test: Iterable[str], rule: str) -> Fold:
    return Fold(f"fold{index:02d}", datadir.c_sorted(train), datadir.c_sorted(valid),
                datadir.c_sorted(test), rule)


def _group(mapping: Mapping[str, str]) -> dict[str, list[str]]:
    """Invert ``key -> value`` into ``value -> sorted keys``."""
    groups: dict[str, list[str]] = {}
    for key in datadir.c_sorted(mapping):
        groups.setdefault(mapping[key], []).append(key)
    return groups


def stratified_sample(utts: Sequence[str], stratum: Callable[[str], object], fraction: float,
                      rng: random.Random) -> set[str]:
    """Draw ``round(fraction * len(utts))`` utterances, each stratum contributing its share."""
    groups: dict[object, list[str]] = {}
    for utt in datadir.c_sorted(utts):
        groups.setdefault(stratum(utt), []).append(utt)
    keys = sorted(groups, key=str)
    quotas = {key: fraction * len(groups[key]) for key in keys}
    counts = {key: math.floor(quotas[key]) for key in keys}
    leftover = round(fraction * len(utts)) - sum(counts.values())
    for key in sorted(keys, key=lambda k: -(quotas[k] - counts[k]))[:max(leftover, 0)]:
        counts[key] += 1
    chosen: set[str] = set()
    for key in keys:
        members = list(groups[key])
        rng.shuffle(members)
        chosen.update(members[:counts[key]])
    return chosen


def loso_folds(utt2spk: Mapping[str, str], utt2session: Mapping[str, str], seed: int = 1) -> list[Fold]:
    """One fold per speaker; valid = the other speaker(s) of the test speaker's session."""
    spk2utt = _group(utt2spk)
    if len(spk2utt) < 3:
        raise FoldError(f"loso needs at least 3 speakers (test, valid, train), found {len(spk2utt)}")
    spk2sessions: dict[str, set[str]] = {}
    for utt, spk in utt2spk.items():
        spk2sessions.setdefault(spk, set()).add(utt2session[utt])
    folds = []
    for index, test_spk in enumerate(sorted(spk2utt), start=1):
        sessions = spk2sessions[test_spk]
        valid_spks = sorted(s for s in spk2utt if s != test_spk and spk2sessions[s] & sessions)
        rule = f"other speaker(s) of session {','.join(sorted(sessions))}"
        if not valid_spks:
            others = sorted(s for s in spk2utt if s != test_spk)
            valid_spks = [random.Random(f"{seed}:{test_spk}").choice(others)]
            rule = f"session has one speaker: seeded random other speaker (seed {seed})"
            logger.warning("loso %s: session %s has no other speaker; valid speaker %s drawn (seed %d)",
                           test_spk, ",".join(sorted(sessions)), valid_spks[0], seed)
        train_spks = [s for s in spk2utt if s != test_spk and s not in valid_spks]
        if not train_spks:
            raise FoldError(f"loso fold for {test_spk}: no training speaker is left "
                            f"(valid = {valid_spks}); the corpus needs more speakers or sessions")
        folds.append(_fold(index, (u for s in train_spks for u in spk2utt[s]),
                           (u for s in valid_spks for u in spk2utt[s]), spk2utt[test_spk], rule))
    return folds


def loso_session_folds(utt2spk: Mapping[str, str], utt2session: Mapping[str, str],
                       utt2emo: Mapping[str, str], seed: int = 1, valid_fraction: float = 0.1) -> list[Fold]:
    """One fold per session; valid = a stratified (speaker, emotion) share of the training set."""
    session2utt = _group(utt2session)
    if len(session2utt) < 2:
        raise FoldError(f"loso_session needs at least 2 sessions, found {len(session2utt)}")
    rule = (f"{valid_fraction:.0%} of training utterances stratified by speaker+emotion (seed {seed}); "
            "model selection only, test speakers unseen")
    folds = []
    for index, session in enumerate(sorted(session2utt), start=1):
        pool = [u for s, utts in session2utt.items() if s != session for u in utts]
        rng = random.Random(f"{seed}:loso_session:{session}")
        valid = stratified_sample(pool, lambda u: (utt2spk[u], utt2emo[u]), valid_fraction, rng)
        folds.append(_fold(index, (u for u in pool if u not in valid), valid, session2utt[session], rule))
    return folds


def random_folds(utt2emo: Mapping[str, str], seed: int = 1,
                 valid_fraction: float = 0.1, test_fraction: float = 0.1) -> list[Fold]:
    """One speaker-dependent fold: test and valid are emotion-stratified shares of all utterances."""
    logger.warning("protocol 'random' is speaker-DEPENDENT (test speakers are seen in training); "
                   "use it only to compare with published numbers that used it")
    utts = datadir.c_sorted(utt2emo)
    rng = random.Random(f"{seed}:random")
    test = stratified_sample(utts, utt2emo.__getitem__, test_fraction, rng)
    rest = [u for u in utts if u not in test]
    valid = stratified_sample(rest, utt2emo.__getitem__, valid_fraction / (1 - test_fraction), rng)
    rule = (f"speaker-dependent {1 - valid_fraction - test_fraction:.0%}/{valid_fraction:.0%}/"
            f"{test_fraction:.0%} split stratified by emotion (seed {seed}); comparison only")
    return [_fold(1, (u for u in rest if u not in valid), valid, test, rule)]


def check_no_leakage(fold: Mapping[str, Sequence[str]], utt2spk: Mapping[str, str],
                     speaker_disjoint: bool = True, name: str = "fold") -> None:
    """Raise :class:`FoldError` unless every utterance of ``utt2spk`` is in exactly one set and,
    if ``speaker_disjoint``, no test speaker appears in train or valid."""
    problems = []
    seen: dict[str, str] = {}
    for set_name in SETS:
        for utt in fold.get(set_name, []):
            if utt not in utt2spk:
                problems.append(f"{set_name}: {utt} is not in the data dir")
            elif utt in seen:
                problems.append(f"{utt} is in both {seen[utt]} and {set_name}")
            seen.setdefault(utt, set_name)
    missing = [utt for utt in utt2spk if utt not in seen]
    if missing:
        problems.append(f"{len(missing)} utterance(s) in no set, e.g. {missing[0]}")
    if speaker_disjoint:
        test_spks = {utt2spk[u] for u in fold.get("test", []) if u in utt2spk}
        for set_name in ("train", "valid"):
            leaked = sorted(test_spks & {utt2spk[u] for u in fold.get(set_name, []) if u in utt2spk})
            if leaked:
                problems.append(f"test speaker(s) {', '.join(leaked)} also in {set_name}")
    if problems:
        raise FoldError(f"{name}: " + "; ".join(problems[:10])
                        + (f"; ... {len(problems) - 10} more" if len(problems) > 10 else ""))


def load_fold(fold_dir: str | Path) -> dict[str, list[str]]:
    """Read ``train``, ``valid`` and ``test`` of one fold directory."""
    fold_dir = Path(fold_dir)
    missing = [name for name in SETS if not (fold_dir / name).is_file()]
    if missing:
        raise FoldError(f"{fold_dir}: missing {', '.join(missing)} (run python -m serkit.bin.make_folds)")
    return {name: datadir.read_list(fold_dir / name) for name in SETS}


def read_fold_inputs(data_dir: str | Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Read ``utt2spk``, ``utt2session`` and ``utt2emo``; they must list the same utterances."""
    data_dir = Path(data_dir)
    if not (data_dir / "utt2session").is_file():
        raise FoldError(f"{data_dir / 'utt2session'}: not found; folds need the session of each "
                        "utterance (written by the corpus preparation, stage 0)")
    maps = [datadir.read_map(data_dir / name) for name in ("utt2spk", "utt2session", "utt2emo")]
    for name, mapping in zip(("utt2session", "utt2emo"), maps[1:]):
        if set(mapping) != set(maps[0]):
            diff = sorted(set(mapping) ^ set(maps[0]))
            raise FoldError(f"{data_dir}: utt2spk and {name} list different utterances "
                            f"({len(diff)} differ, e.g. {diff[0]}); fix: python -m serkit.bin.validate_data_dir "
                            f"{data_dir} --fix")
    return maps[0], maps[1], maps[2]


def make_folds(data_dir: str | Path, folds_dir: str | Path, protocols: Sequence[str] = PROTOCOLS,
               seed: int = 1) -> dict[str, list[Fold]]:
    """Build, write and verify the folds of each protocol; return them by protocol.

    The data directory is validated first (as at the end of every data stage), so folds are never
    built from inconsistent files.
    """
    datadir.validate_data_dir(data_dir)
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise FoldError(f"unknown protocol(s) {unknown}; choose from {', '.join(PROTOCOLS)}")
    utt2spk, utt2session, utt2emo = read_fold_inputs(data_dir)
    built = {}
    for protocol in protocols:
        if protocol == "loso":
            folds = loso_folds(utt2spk, utt2session, seed)
        elif protocol == "loso_session":
            folds = loso_session_folds(utt2spk, utt2session, utt2emo, seed)
        else:
            folds = random_folds(utt2emo, seed)
        write_folds(Path(folds_dir) / protocol, folds, utt2spk, speaker_disjoint=protocol != "random")
        built[protocol] = folds
    return built


def write_folds(protocol_dir: Path, folds: Sequence[Fold], utt2spk: Mapping[str, str],
                speaker_disjoint: bool) -> None:
    """Write fold directories and ``folds.tsv``, remove stale folds, then re-read and check."""
    _remove_stale_folds(protocol_dir, {fold.name for fold in folds})
    rows = ["\t".join(TSV_HEADER)]
    for fold in folds:
        for set_name, utts in fold.sets().items():
            datadir.write_list(protocol_dir / fold.name / set_name, utts)
        speakers = {name: ",".join(sorted({utt2spk[u] for u in utts})) for name, utts in fold.sets().items()}
        rows.append("\t".join([fold.name, speakers["test"], speakers["valid"], str(len(fold.train)),
                               str(len(fold.valid)), str(len(fold.test)), fold.valid_rule]))
    datadir.write_list(protocol_dir / "folds.tsv", rows)
    for fold in folds:
        check_no_leakage(load_fold(protocol_dir / fold.name), utt2spk, speaker_disjoint,
                         name=str(protocol_dir / fold.name))
    logger.info("%s: %d fold(s) written and checked", protocol_dir, len(folds))


def _remove_stale_folds(protocol_dir: Path, keep: set[str]) -> None:
    """Delete ``fold*`` dirs of an earlier run that this run does not produce (e.g. fewer speakers).

    Only directories holding nothing but fold set files are removed; anything else is an error,
    so user files are never deleted.
    """
    if not protocol_dir.is_dir():
        return
    for path in sorted(protocol_dir.glob("fold[0-9]*")):
        if not path.is_dir() or path.name in keep:
            continue
        if {child.name for child in path.iterdir()} - set(SETS):
            raise FoldError(f"{path}: stale fold directory with other files in it; remove it by hand")
        logger.info("removing stale fold %s", path)
        shutil.rmtree(path)
