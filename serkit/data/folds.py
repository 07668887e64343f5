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

Protocols for corpora without IEMOCAP-style sessions (none needs ``utt2session``):

``loso_speaker`` -- leave one speaker out (few speakers: RAVDESS, Emo-DB). valid = whole held-out
    training speakers (about 10 %, at least one) chosen so that valid holds every class; never the
    test speaker. Where genders are known the first validation speaker has the test speaker's gender
    and further ones alternate: a male test speaker's checkpoint is not chosen on female voices only.
``speaker_kfold`` -- speaker-grouped k-fold (many speakers: CREMA-D). Speakers are dealt into k
    groups, balanced by gender where ``utt2gender`` is known; test = one group; valid = held-out
    training speakers as in ``loso_speaker``.
``predefined`` -- the release's own partitions from ``utt2split`` (MSP-Podcast Train /
    Development (or Validation) / Test1.., ESD train / evaluation / test): one fold per test set.
``random_kfold`` -- speaker-DEPENDENT stratified random k-fold (as TIM-Net and STA-CRNN report):
    every speaker is in every set; for comparison with such numbers only.
``sentence_kfold`` -- sentence-disjoint k-fold from ``utt2sentence`` (scripted corpora: RAVDESS
    2 sentences, CREMA-D 12, Emo-DB 10): test sentences never occur in training; speaker-dependent.

Stratified sampling takes ``round(fraction * n)`` utterances in all and gives each stratum its
proportional share (largest remainders get the leftover units), so small strata are not
systematically rounded away; then every class left out gets one utterance (``cover``), so a
validation set always holds every class.

Each protocol folder also gets ``protocol.json`` (what the folds are, in words that fit how they
were built: :func:`read_protocol`) and ``leakage.txt`` (speaker and sentence overlap between
train, valid and test, per fold, and speakers who recorded only some emotions). ``folds.tsv``,
``protocol.json`` and the log give each fold's class coverage: on a corpus whose speakers each
recorded a few emotions a test fold can lack a class, and its UA is then a mean over fewer classes.

After writing, each fold is read back with :func:`load_fold` and checked with
:func:`check_no_leakage`.
"""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from serkit.data import datadir
from serkit.atomic import atomic_write_text
from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

#: The IEMOCAP protocols, built by default when the data dir has sessions (``--protocols default``).
SESSION_PROTOCOLS = ("loso", "loso_session", "random")
PROTOCOLS = (*SESSION_PROTOCOLS, "loso_speaker", "speaker_kfold", "predefined", "random_kfold", "sentence_kfold")
#: Protocols whose test speakers also appear in training (labelled so wherever they are shown).
SPEAKER_DEPENDENT = frozenset({"random", "random_kfold", "sentence_kfold"})
#: Speaker ids that mean "not known" (MSP-Podcast); leakage reports leave them out.
UNKNOWN_SPEAKERS = frozenset({"unknown"})
PROTOCOL_FILE = "protocol.json"
#: Stage 0's warnings in the data dir (serkit.corpora.common.WARNINGS_FILE: empty classes, missing
#: folders, an altered copy); protocol.json repeats them as ``data_warnings`` so RESULTS.md shows them.
PREP_WARNINGS_FILE = "prep_warnings.txt"
LEAKAGE_FILE = "leakage.txt"
VALID_SPEAKER_FRACTION = 0.1
#: utt2split names by role (lower-cased): the release's development set selects checkpoints.
SPLIT_ROLES = {"train": "train", "development": "valid", "validation": "valid", "evaluation": "valid",
               "dev": "valid", "valid": "valid"}
#: The split names of a fold: its file names (``<fold dir>/train`` ...) and :class:`Fold`'s fields.
SPLITS = ("train", "valid", "test")
TSV_HEADER = ("fold", "test_speakers", "valid_speakers", "n_train", "n_valid", "n_test", "valid_rule",
              "test_classes", "valid_classes", "test_genders", "valid_genders")


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
        return {name: getattr(self, name) for name in SPLITS}


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
                      rng: random.Random, cover: Callable[[str], object] | None = None) -> set[str]:
    """Draw ``round(fraction * len(utts))`` utterances, each stratum contributing its share.

    ``cover`` (e.g. the emotion): afterwards, every value it takes on ``utts`` must be in the
    sample; a value the quotas left out (every stratum's share below one utterance, ties broken in
    sorted order) gets one utterance drawn from its members. The main draw is made first and
    unchanged, so a sample that already held every value is exactly what it was without ``cover``.
    """
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
    if cover is not None:
        held = {cover(u) for u in chosen}
        for value in sorted({cover(u) for u in utts} - held, key=str):
            members = [u for u in datadir.c_sorted(utts) if cover(u) == value]
            chosen.add(rng.choice(members))
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
        valid = stratified_sample(pool, lambda u: (utt2spk[u], utt2emo[u]), valid_fraction, rng,
                                  cover=utt2emo.__getitem__)
        folds.append(_fold(index, (u for u in pool if u not in valid), valid, session2utt[session], rule))
    return folds


def random_folds(utt2emo: Mapping[str, str], seed: int = 1,
                 valid_fraction: float = 0.1, test_fraction: float = 0.1) -> list[Fold]:
    """One speaker-dependent fold: test and valid are emotion-stratified shares of all utterances."""
    logger.warning("protocol 'random' is speaker-DEPENDENT (test speakers are seen in training); "
                   "use it only to compare with published numbers that used it")
    utts = datadir.c_sorted(utt2emo)
    rng = random.Random(f"{seed}:random")
    test = stratified_sample(utts, utt2emo.__getitem__, test_fraction, rng, cover=utt2emo.__getitem__)
    rest = [u for u in utts if u not in test]
    valid = stratified_sample(rest, utt2emo.__getitem__, valid_fraction / (1 - test_fraction), rng,
                              cover=utt2emo.__getitem__)
    rule = (f"speaker-dependent {1 - valid_fraction - test_fraction:.0%}/{valid_fraction:.0%}/"
            f"{test_fraction:.0%} split stratified by emotion (seed {seed}); comparison only")
    return [_fold(1, (u for u in rest if u not in valid), valid, test, rule)]


# ------------------------------------------------------------------ protocols without sessions

def speaker_genders(utt2spk: Mapping[str, str], utt2gender: Mapping[str, str] | None) -> dict[str, str]:
    """Each speaker's gender (its utterances' majority value); empty when the corpus gives none."""
    if not utt2gender:
        return {}
    votes: dict[str, Counter] = {}
    for utt, spk in utt2spk.items():
        votes.setdefault(spk, Counter())[utt2gender[utt]] += 1
    return {spk: counter.most_common(1)[0][0] for spk, counter in votes.items()}


def _gender_interleaved(speakers: Sequence[str], genders: Mapping[str, str], rng: random.Random,
                        first: str | None = None) -> list[str]:
    """Speakers in a seeded order that alternates genders where known (f, m, f, m, ... then the rest).

    ``first``: the gender to start with (default: f). Always starting with f made every one-speaker
    validation set female, so male test speakers had their checkpoints chosen on a female voice."""
    by_gender: dict[str, list[str]] = {}
    for spk in sorted(speakers):
        by_gender.setdefault(genders.get(spk, "?"), []).append(spk)
    for members in by_gender.values():
        rng.shuffle(members)
    order = []
    keys = sorted(by_gender)
    if first in by_gender:
        keys.remove(first)
        keys.insert(0, first)
    queues = [by_gender[g] for g in keys]
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return order


def held_out_speakers(candidates: Sequence[str], spk2utt: Mapping[str, Sequence[str]],
                      utt2emo: Mapping[str, str], genders: Mapping[str, str], rng: random.Random,
                      fraction: float = VALID_SPEAKER_FRACTION, where: str = "",
                      first_gender: str | None = None) -> list[str]:
    """Validation speakers drawn from ``candidates``: about ``fraction`` of them (at least one), genders
    alternating from ``first_gender``, then more until validation holds every class the candidates
    hold; at least one candidate is left for training."""
    order = _gender_interleaved(candidates, genders, rng, first_gender)
    classes_of = {spk: {utt2emo[u] for u in spk2utt[spk]} for spk in order}
    wanted = set().union(*classes_of.values()) if order else set()
    chosen = order[:max(1, round(fraction * len(order)))]
    missing = wanted - set().union(*(classes_of[s] for s in chosen))
    for spk in order[len(chosen):]:
        if not missing:
            break
        if classes_of[spk] & missing:
            chosen.append(spk)
            missing -= classes_of[spk]
    if len(chosen) >= len(order):
        raise FoldError(f"{where}: no training speaker is left once validation holds every class "
                        f"(validation speakers {sorted(chosen)}); the corpus has too few speakers for this protocol")
    return sorted(chosen)


def _held_out_rule(valid_spks: Sequence[str], others: Sequence[str], spk2utt: Mapping[str, Sequence[str]],
                   genders: Mapping[str, str], seed: int, matched: str | None = None) -> str:
    """How validation was chosen, with its real size: the classes a speaker recorded can force more
    speakers in than the nominal 10 % (a port held 46 %), and a reader must see that."""
    n_valid = sum(len(spk2utt[s]) for s in valid_spks)
    n_others = sum(len(spk2utt[s]) for s in others)
    who = ",".join(f"{s}({genders[s]})" if s in genders else s for s in valid_spks)
    gender = (f"; the first drawn of the test speaker's gender ({matched})"
              if matched and any(genders.get(s) == matched for s in valid_spks)
              else "; genders alternating" if genders else "")
    return (f"held-out training speaker(s) {who}: {len(valid_spks)} of {len(others)} speakers, {n_valid} of "
            f"{n_others} non-test utterances ({n_valid / max(n_others, 1):.0%}), drawn to hold every class{gender} "
            f"(seed {seed})")


def loso_speaker_folds(utt2spk: Mapping[str, str], utt2emo: Mapping[str, str],
                       utt2gender: Mapping[str, str] | None = None, seed: int = 1) -> list[Fold]:
    """One fold per speaker; valid = held-out training speakers that hold every class."""
    spk2utt = _group(utt2spk)
    if len(spk2utt) < 3:
        raise FoldError(f"loso_speaker needs at least 3 speakers (test, valid, train), found {len(spk2utt)}")
    genders = speaker_genders(utt2spk, utt2gender)
    folds = []
    for index, test_spk in enumerate(sorted(spk2utt), start=1):
        others = [s for s in spk2utt if s != test_spk]
        rng = random.Random(f"{seed}:loso_speaker:{test_spk}")
        valid_spks = held_out_speakers(others, spk2utt, utt2emo, genders, rng, where=f"loso_speaker {test_spk}",
                                       first_gender=genders.get(test_spk))
        rule = _held_out_rule(valid_spks, others, spk2utt, genders, seed, matched=genders.get(test_spk))
        folds.append(_fold(index, (u for s in others if s not in valid_spks for u in spk2utt[s]),
                           (u for s in valid_spks for u in spk2utt[s]), spk2utt[test_spk], rule))
    return folds


def speaker_kfold_folds(utt2spk: Mapping[str, str], utt2emo: Mapping[str, str],
                        utt2gender: Mapping[str, str] | None = None, k: int = 5, seed: int = 1) -> list[Fold]:
    """k folds of whole speakers (gender-balanced groups where known); valid = held-out training speakers."""
    spk2utt = _group(utt2spk)
    if not 2 <= k <= len(spk2utt) - 2:
        raise FoldError(f"speaker_kfold: k={k} must be at least 2 and leave 2 speakers outside each test group "
                        f"({len(spk2utt)} speakers)")
    genders = speaker_genders(utt2spk, utt2gender)
    order = _gender_interleaved(list(spk2utt), genders, random.Random(f"{seed}:speaker_kfold"))
    # deal gender by gender so every group gets its share of each gender
    by_gender = sorted(order, key=lambda s: genders.get(s, "?"))
    groups = [by_gender[i::k] for i in range(k)]
    folds = []
    for index, group in enumerate(groups, start=1):
        others = [s for s in order if s not in group]
        rng = random.Random(f"{seed}:speaker_kfold:{index}")
        known = sorted(set(genders.values()))  # the starting gender rotates, so folds' validation sets balance
        valid_spks = held_out_speakers(others, spk2utt, utt2emo, genders, rng, where=f"speaker_kfold fold {index}",
                                       first_gender=known[(index - 1) % len(known)] if known else None)
        rule = _held_out_rule(valid_spks, others, spk2utt, genders, seed)
        folds.append(_fold(index, (u for s in others if s not in valid_spks for u in spk2utt[s]),
                           (u for s in valid_spks for u in spk2utt[s]), (u for s in group for u in spk2utt[s]), rule))
    return folds


def predefined_folds(utt2split: Mapping[str, str], utt2emo: Mapping[str, str] | None = None) -> list[Fold]:
    """The release's partitions: train and development sets by name, one fold per test set (sorted).

    With ``utt2emo``, a development set lacking a class is an error: checkpoints chosen on it would
    ignore that class (a partial copy; choose another protocol)."""
    roles = {name: SPLIT_ROLES.get(name.lower(), "test" if name.lower().startswith("test") else None)
             for name in set(utt2split.values())}
    unknown = sorted(name for name, role in roles.items() if role is None)
    if unknown:
        raise FoldError(f"predefined: utt2split names {unknown}, which are neither train ({'/'.join(SPLIT_ROLES)}) "
                        "nor test*; rename them in the data dir or choose another protocol")
    by_role = {role: sorted(n for n, r in roles.items() if r == role) for role in SPLITS}
    empty = [role for role, names in by_role.items() if not names]
    if empty:
        raise FoldError(f"predefined: utt2split has no {' and no '.join(empty)} set (found {sorted(roles)}); "
                        "a partial copy may lack it: choose another protocol")
    split2utt = _group(utt2split)
    train = [u for n in by_role["train"] for u in split2utt[n]]
    valid = [u for n in by_role["valid"] for u in split2utt[n]]
    rule = f"the release's {'+'.join(by_role['valid'])} set"
    if utt2emo is not None:
        lacking = sorted(set(utt2emo.values()) - {utt2emo[u] for u in valid})
        if lacking:
            raise FoldError(f"predefined: {rule} holds no utterance of class(es) {lacking}, so checkpoints would be "
                            "chosen without them (a partial copy?); choose another protocol, e.g. speaker_kfold")
    return [_fold(index, train, valid, split2utt[name], f"{rule}; test = {name}")
            for index, name in enumerate(by_role["test"], start=1)]


def _stratified_kfold(utts: Sequence[str], key: Callable[[str], object], k: int, rng: random.Random) -> list[list[str]]:
    """Split ``utts`` into k parts, each class dealt round-robin after a seeded shuffle (sizes within one)."""
    parts: list[list[str]] = [[] for _ in range(k)]
    position = 0
    groups: dict[object, list[str]] = {}
    for utt in datadir.c_sorted(utts):
        groups.setdefault(key(utt), []).append(utt)
    for value in sorted(groups, key=str):
        members = groups[value]
        rng.shuffle(members)
        for utt in members:
            parts[position % k].append(utt)
            position += 1
    return parts


def random_kfold_folds(utt2emo: Mapping[str, str], k: int = 10, seed: int = 1,
                       valid_fraction: float = 0.1) -> list[Fold]:
    """Speaker-dependent emotion-stratified random k-fold; valid = a stratified share of the other parts."""
    if not 2 <= k <= len(utt2emo):
        raise FoldError(f"random_kfold: k={k} must be between 2 and the number of utterances")
    logger.warning("protocol 'random_kfold' is speaker-DEPENDENT (every speaker is in train and test); "
                   "use it only to compare with published numbers that used it")
    rng = random.Random(f"{seed}:random_kfold")
    parts = _stratified_kfold(list(utt2emo), utt2emo.__getitem__, k, rng)
    rule = (f"speaker-dependent: {valid_fraction:.0%} of the other parts stratified by emotion, every class "
            f"(seed {seed})")
    folds = []
    for index, test in enumerate(parts, start=1):
        rest = [u for i, part in enumerate(parts) if i != index - 1 for u in part]
        valid = stratified_sample(rest, utt2emo.__getitem__, valid_fraction, rng, cover=utt2emo.__getitem__)
        folds.append(_fold(index, (u for u in rest if u not in valid), valid, test, rule))
    return folds


def sentence_kfold_folds(utt2sentence: Mapping[str, str], utt2emo: Mapping[str, str], k: int = 5, seed: int = 1,
                         valid_fraction: float = 0.1) -> list[Fold]:
    """Sentence-disjoint folds: test = the utterances of a group of sentences, never heard in training."""
    sentences = sorted(set(utt2sentence.values()))
    if len(sentences) < 2:
        raise FoldError(f"sentence_kfold needs at least 2 distinct sentences in utt2sentence, found {len(sentences)}")
    k = min(k, len(sentences))
    rng = random.Random(f"{seed}:sentence_kfold")
    rng.shuffle(sentences)
    groups = [set(sentences[i::k]) for i in range(k)]
    rule = (f"speaker-dependent, sentence-disjoint: {valid_fraction:.0%} of the training sentences' utterances "
            f"stratified by emotion, every class (seed {seed})")
    folds = []
    for index, group in enumerate(groups, start=1):
        test = [u for u, s in utt2sentence.items() if s in group]
        rest = [u for u, s in utt2sentence.items() if s not in group]
        valid = stratified_sample(rest, utt2emo.__getitem__, valid_fraction, rng, cover=utt2emo.__getitem__)
        folds.append(_fold(index, (u for u in rest if u not in valid), valid, test,
                           f"{rule}; test sentences {','.join(sorted(group))}"))
    return folds


def check_no_leakage(fold: Mapping[str, Sequence[str]], utt2spk: Mapping[str, str],
                     speaker_disjoint: bool = True, name: str = "fold") -> None:
    """Raise :class:`FoldError` unless every utterance of ``utt2spk`` is in exactly one set and,
    if ``speaker_disjoint``, no test speaker appears in train or valid."""
    problems = []
    seen: dict[str, str] = {}
    for set_name in SPLITS:
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
    missing = [name for name in SPLITS if not (fold_dir / name).is_file()]
    if missing:
        raise FoldError(f"{fold_dir}: missing {', '.join(missing)} (rebuild the folds in the recipe folder: ./run.sh --stage 2 --stop_stage 2)")
    return {name: datadir.read_list(fold_dir / name) for name in SPLITS}


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
                            f"({len(diff)} differ, e.g. {diff[0]}); fix in the recipe folder: . ./path.sh && "
                            f"python -m serkit.bin.validate_data_dir {data_dir} --fix")
    return maps[0], maps[1], maps[2]


def _optional_map(data_dir: Path, name: str, utt2spk: Mapping[str, str]) -> dict[str, str] | None:
    """An optional utterance-keyed file, or None; it must list exactly the utterances of utt2spk."""
    if not (data_dir / name).is_file():
        return None
    mapping = datadir.read_map(data_dir / name)
    if set(mapping) != set(utt2spk):
        raise FoldError(f"{data_dir / name}: lists other utterances than utt2spk; fix in the recipe folder: . ./path.sh && "
                        f"python -m serkit.bin.validate_data_dir {data_dir} --fix")
    return mapping


def default_protocols(data_dir: str | Path) -> list[str]:
    """What ``--protocols default`` builds: the IEMOCAP set where sessions exist, else nothing extra."""
    return list(SESSION_PROTOCOLS) if (Path(data_dir) / "utt2session").is_file() else []


def make_folds(data_dir: str | Path, folds_dir: str | Path, protocols: Sequence[str] = SESSION_PROTOCOLS,
               seed: int = 1, k: int = 5) -> dict[str, list[Fold]]:
    """Build, write and verify the folds of each protocol; return them by protocol.

    ``protocols`` may name ``default`` (:func:`default_protocols`); ``k`` is the fold count of the
    k-fold protocols. The data directory is validated first (as at the end of every data stage),
    so folds are never built from inconsistent files. Next to the folds of each protocol go
    ``folds.tsv``, ``protocol.json`` and ``leakage.txt``.
    """
    datadir.validate_data_dir(data_dir)
    data_dir = Path(data_dir)
    wanted: list[str] = []
    for protocol in protocols:
        for name in default_protocols(data_dir) if protocol == "default" else [protocol]:
            if name not in wanted:
                wanted.append(name)
    if not wanted:
        raise FoldError(f"no protocol to build: {data_dir} has no utt2session, which the default protocols "
                        f"({', '.join(SESSION_PROTOCOLS)}) need; choose one of {', '.join(PROTOCOLS[3:])}")
    unknown = [p for p in wanted if p not in PROTOCOLS]
    if unknown:
        raise FoldError(f"unknown protocol(s) {unknown}; choose from {', '.join(PROTOCOLS)} (or default)")
    utt2spk = datadir.read_map(data_dir / "utt2spk")
    utt2emo = datadir.read_map(data_dir / "utt2emo")
    optional = {name: _optional_map(data_dir, name, utt2spk)
                for name in ("utt2gender", "utt2sentence", "utt2split")}
    built = {}
    for protocol in wanted:
        folds = _build(protocol, data_dir, utt2spk, utt2emo, optional, seed, k)
        protocol_dir = Path(folds_dir) / protocol
        write_folds(protocol_dir, folds, utt2spk, speaker_disjoint=protocol not in SPEAKER_DEPENDENT | {"predefined"},
                    utt2emo=utt2emo, genders=speaker_genders(utt2spk, optional["utt2gender"]))
        info = write_protocol_files(protocol_dir, protocol, folds, utt2spk, utt2emo, optional["utt2sentence"], seed,
                                    optional["utt2gender"])
        if (data_dir / PREP_WARNINGS_FILE).is_file():
            info["data_warnings"] = datadir.read_list(data_dir / PREP_WARNINGS_FILE)
            for line in info["data_warnings"]:
                logger.warning("%s (stage 0, %s): %s", protocol, data_dir / PREP_WARNINGS_FILE, line)
            atomic_write_text(protocol_dir / PROTOCOL_FILE, json.dumps(info, indent=1) + "\n")
        built[protocol] = folds
    return built


def _needs(protocol: str, name: str, mapping: Mapping[str, str] | None, data_dir: Path) -> Mapping[str, str]:
    if mapping is None:
        raise FoldError(f"protocol {protocol} needs {data_dir / name}, which this corpus's preparation does not write "
                        "(docs/formats.md lists which protocol needs which file); choose another --protocol")
    return mapping


def _build(protocol: str, data_dir: Path, utt2spk, utt2emo, optional, seed: int, k: int) -> list[Fold]:
    if protocol in ("loso", "loso_session"):
        utt2spk, utt2session, utt2emo = read_fold_inputs(data_dir)
        if protocol == "loso":
            return loso_folds(utt2spk, utt2session, seed)
        return loso_session_folds(utt2spk, utt2session, utt2emo, seed)
    if protocol == "random":
        return random_folds(utt2emo, seed)
    if protocol == "loso_speaker":
        return loso_speaker_folds(utt2spk, utt2emo, optional["utt2gender"], seed)
    if protocol == "speaker_kfold":
        return speaker_kfold_folds(utt2spk, utt2emo, optional["utt2gender"], k, seed)
    if protocol == "predefined":
        return predefined_folds(_needs(protocol, "utt2split", optional["utt2split"], data_dir), utt2emo)
    if protocol == "random_kfold":
        return random_kfold_folds(utt2emo, k, seed)
    return sentence_kfold_folds(_needs(protocol, "utt2sentence", optional["utt2sentence"], data_dir), utt2emo, k, seed)


def class_coverage(utts: Iterable[str], utt2emo: Mapping[str, str], classes: Sequence[str]) -> str:
    """``4/4`` or ``2/4 (no ang,neu)``: which of the corpus's classes a set holds."""
    held = {utt2emo[u] for u in utts}
    missing = [c for c in classes if c not in held]
    return f"{len(classes) - len(missing)}/{len(classes)}" + (f" (no {','.join(missing)})" if missing else "")


def gender_counts(speakers: Iterable[str], genders: Mapping[str, str]) -> str:
    """``f1 m1`` (speakers per gender), or ``-`` where the corpus gives no gender."""
    counts = Counter(genders[s] for s in speakers if s in genders)
    return " ".join(f"{g}{n}" for g, n in sorted(counts.items())) or "-"


def write_folds(protocol_dir: Path, folds: Sequence[Fold], utt2spk: Mapping[str, str],
                speaker_disjoint: bool, utt2emo: Mapping[str, str] | None = None,
                genders: Mapping[str, str] | None = None) -> None:
    """Write fold directories and ``folds.tsv``, remove stale folds, then re-read and check.

    With ``utt2emo``, ``folds.tsv`` and the log give each fold's class coverage of test and
    validation, and a test set lacking a class is a warning (its UA is a mean over fewer classes);
    with ``genders``, the genders of the test and validation speakers."""
    _remove_stale_folds(protocol_dir, {fold.name for fold in folds})
    classes = sorted(set(utt2emo.values())) if utt2emo is not None else []
    genders = genders or {}
    rows = ["\t".join(TSV_HEADER)]
    for fold in folds:
        for set_name, utts in fold.sets().items():
            datadir.write_list(protocol_dir / fold.name / set_name, utts)
        spk_sets = {name: sorted({utt2spk[u] for u in utts}) for name, utts in fold.sets().items()}
        speakers = {name: ",".join(spks) for name, spks in spk_sets.items()}
        coverage = {name: class_coverage(fold.sets()[name], utt2emo, classes) if classes else "-"
                    for name in ("test", "valid")}
        gender = {name: gender_counts(spk_sets[name], genders) for name in ("test", "valid")}
        rows.append("\t".join([fold.name, speakers["test"], speakers["valid"], str(len(fold.train)),
                               str(len(fold.valid)), str(len(fold.test)), fold.valid_rule, coverage["test"],
                               coverage["valid"], gender["test"], gender["valid"]]))
        if classes:
            logger.info("%s %s: test %s (%d utts, classes %s, genders %s); valid %s (%d utts, classes %s, genders %s); "
                        "train %d utts", protocol_dir.name, fold.name, _short(speakers["test"]), len(fold.test),
                        coverage["test"], gender["test"], _short(speakers["valid"]), len(fold.valid),
                        coverage["valid"], gender["valid"], len(fold.train))
            if "(no " in coverage["test"]:
                logger.warning("%s/%s: the test set holds %s classes: its UA is a mean over the classes it holds "
                               "(RESULTS.md labels it)", protocol_dir, fold.name, coverage["test"])
    datadir.write_list(protocol_dir / "folds.tsv", rows)
    for fold in folds:
        check_no_leakage(load_fold(protocol_dir / fold.name), utt2spk, speaker_disjoint,
                         name=str(protocol_dir / fold.name))
    logger.info("%s: %d fold(s) written and checked", protocol_dir, len(folds))


def _short(speakers: str, limit: int = 60) -> str:
    return speakers if len(speakers) <= limit else speakers[:limit] + "..."


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
        if {child.name for child in path.iterdir()} - set(SPLITS):
            raise FoldError(f"{path}: stale fold directory with other files in it; remove it by hand")
        logger.info("removing stale fold %s", path)
        shutil.rmtree(path)


# ------------------------------------------------------- protocol description and leakage report

def fold_leakage(fold: Fold, utt2spk: Mapping[str, str], utt2sentence: Mapping[str, str] | None,
                 utt2emo: Mapping[str, str] | None = None) -> dict:
    """Speaker (known speakers only) and sentence overlap between the sets of one fold; with
    ``utt2emo``, the classes its test set lacks."""
    spk = {name: {utt2spk[u] for u in utts} - UNKNOWN_SPEAKERS for name, utts in fold.sets().items()}
    row = {"fold": fold.name, "test_speakers_in_train": sorted(spk["test"] & spk["train"]),
           "test_speakers_in_valid": sorted(spk["test"] & spk["valid"]),
           "valid_speakers_in_train": sorted(spk["valid"] & spk["train"])}
    if utt2emo is not None:
        row["test_missing_classes"] = sorted(set(utt2emo.values()) - {utt2emo[u] for u in fold.test})
    if utt2sentence is not None:
        train_sentences = {utt2sentence[u] for u in fold.train}
        test_sentences = {utt2sentence[u] for u in fold.test}
        row["test_sentences"] = len(test_sentences)
        row["test_sentences_in_train"] = len(test_sentences & train_sentences)
        row["test_utterances_with_sentence_in_train"] = sum(utt2sentence[u] in train_sentences for u in fold.test)
    return row


def _span(values: Sequence[int]) -> str:
    """``3`` or ``2-4``: the range of a per-fold count."""
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


MATCHED_GENDER = ", the first drawn of the test speaker's gender"


def describe(protocol: str, folds: Sequence[Fold], leakage: Sequence[dict], utt2spk: Mapping[str, str],
             n_sentences: int | None, k: int | None, gender_balanced: bool) -> str:
    """One paragraph saying how these folds were built (RESULTS.md shows it)."""
    n = len(folds)
    n_speakers = len(set(utt2spk.values()) - UNKNOWN_SPEAKERS)
    dependent = any(row["test_speakers_in_train"] for row in leakage)
    valid_spks = _span([len({utt2spk[u] for u in f.valid}) for f in folds])
    shares = [round(100 * len(f.valid) / max(len(f.valid) + len(f.train), 1)) for f in folds]
    valid_share = f"{_span(shares)}% of the non-test utterances"
    test_spks = _span([len({utt2spk[u] for u in f.test}) for f in folds])
    if protocol == "loso":
        lone = sum(f.valid_rule.startswith("session has one speaker") for f in folds)
        text = (f"Leave one speaker out: {n} folds, one per speaker; test = that speaker; validation = the other "
                "speaker(s) of the test speaker's session, never in training")
        if lone:
            text += f"; in {lone} fold(s) the session had one speaker, so validation is one seeded random other speaker"
    elif protocol == "loso_session":
        text = (f"Leave one session out: {n} folds; test = the speakers of one session; validation = 10% of the "
                "training utterances stratified by speaker and emotion, every class (validation speakers also "
                "train; test speakers unseen)")
    elif protocol == "random":
        text = ("Speaker-DEPENDENT random split (1 fold): 80/10/10 of the utterances stratified by emotion; test "
                "speakers are also in training, so scores are optimistic (only for comparison with published "
                "numbers that used it)")
    elif protocol == "loso_speaker":
        text = (f"Leave one speaker out: {n} folds, one per speaker of {n_speakers}; test = that speaker; validation "
                f"= {valid_spks} held-out other speaker(s) per fold ({valid_share}) holding every class"
                f"{MATCHED_GENDER if gender_balanced else ''}, never in training")
    elif protocol == "speaker_kfold":
        text = (f"Speaker-grouped {k}-fold: the {n_speakers} speakers dealt into {k} groups"
                f"{' balanced by gender' if gender_balanced else ''}; test = one group ({test_spks} speakers); "
                f"validation = {valid_spks} held-out training speakers ({valid_share}) holding every class"
                f"{', genders alternating' if gender_balanced else ''}, never in training")
    elif protocol == "predefined":
        text = (f"The release's predefined partitions: {n} fold(s), one per test set ({', '.join(f.valid_rule.split('test = ')[-1] for f in folds)}); "
                f"validation = {folds[0].valid_rule.split(';')[0]}; train = the release's training set")
    elif protocol == "random_kfold":
        text = (f"Speaker-DEPENDENT stratified random {k}-fold: the utterances dealt into {k} emotion-stratified "
                "parts; test = one part; validation = 10% of the others, every class; every speaker is in "
                "training and test (as TIM-Net and STA-CRNN report), so scores are not speaker-independent")
    else:
        text = (f"Sentence-disjoint {len(folds)}-fold over {n_sentences} sentences: test = the utterances of a group "
                "of sentences that training never hears; validation = 10% of the rest, every class; speakers are "
                "shared between training and test (speaker-DEPENDENT)")
    if protocol not in SPEAKER_DEPENDENT and dependent:
        text += "; NOTE: test speakers also occur in training (speaker-DEPENDENT, see leakage.txt)"
    elif protocol not in SPEAKER_DEPENDENT:
        text += "; speaker-independent (no test speaker in training or validation)"
    lacking = sum(bool(row.get("test_missing_classes")) for row in leakage)
    if lacking:
        text += (f"; in {lacking} of {n} fold(s) the test set lacks a class (speakers who recorded only some "
                 "emotions), so that fold's UA is a mean over fewer classes")
    if n_sentences is not None and protocol != "sentence_kfold":
        shared = sum(row["test_sentences_in_train"] > 0 for row in leakage)
        if shared:
            text += (f"; the corpus has {n_sentences} distinct sentence(s) and in {shared} of {n} fold(s) the test "
                     "sentences also occur in training (lexical content is not held out)")
    return text + "."


def write_protocol_files(protocol_dir: Path, protocol: str, folds: Sequence[Fold], utt2spk: Mapping[str, str],
                         utt2emo: Mapping[str, str], utt2sentence: Mapping[str, str] | None, seed: int,
                         utt2gender: Mapping[str, str] | None = None) -> dict:
    """Write ``leakage.txt`` and ``protocol.json`` for the folds just written; return the description."""
    leakage = [fold_leakage(fold, utt2spk, utt2sentence, utt2emo) for fold in folds]
    n_speakers = len(set(utt2spk.values()) - UNKNOWN_SPEAKERS)
    n_sentences = len(set(utt2sentence.values())) if utt2sentence is not None else None
    classes = sorted(set(utt2emo.values()))
    missing_valid = {f.name: sorted(set(classes) - {utt2emo[u] for u in f.valid}) for f in folds}
    missing_valid = {name: missing for name, missing in missing_valid.items() if missing}
    missing_test = {row["fold"]: row["test_missing_classes"] for row in leakage if row["test_missing_classes"]}
    confounded = confounded_speakers(utt2spk, utt2emo)
    if confounded:
        logger.warning("%s: %d of %d speakers recorded only some of the %d classes (speaker and emotion are "
                       "confounded; see %s)", protocol_dir, len(confounded), n_speakers, len(classes),
                       protocol_dir / LEAKAGE_FILE)
    genders = speaker_genders(utt2spk, utt2gender)
    for name, missing in missing_valid.items():
        logger.warning("%s/%s: validation holds no %s (checkpoints are chosen without that class)",
                       protocol_dir, name, ",".join(missing))
    kfold = protocol in ("speaker_kfold", "random_kfold", "sentence_kfold")
    description = describe(protocol, folds, leakage, utt2spk, n_sentences, len(folds) if kfold else None,
                           utt2gender is not None)
    dependent = protocol in SPEAKER_DEPENDENT or any(row["test_speakers_in_train"] for row in leakage)
    info = {
        "name": protocol, "description": description, "speaker_dependent": dependent,
        "k": len(folds) if kfold else None, "n_folds": len(folds), "seed": seed,
        "n_utterances": len(utt2spk), "n_speakers": n_speakers, "n_sentences": n_sentences,
        "sentence_overlap": (any(row.get("test_sentences_in_train", 0) for row in leakage)
                             if utt2sentence is not None else None),
        "valid_missing_classes": missing_valid,
        "test_missing_classes": missing_test,
        "confounded_speakers": confounded,
        "folds": [{"name": f.name, "n_train": len(f.train), "n_valid": len(f.valid), "n_test": len(f.test),
                   "test_speakers": sorted({utt2spk[u] for u in f.test}),
                   "valid_speakers": sorted({utt2spk[u] for u in f.valid}), "valid_rule": f.valid_rule,
                   "test_classes": sorted({utt2emo[u] for u in f.test}),
                   "valid_classes": sorted({utt2emo[u] for u in f.valid}),
                   "valid_genders": dict(sorted(Counter(genders[s] for s in {utt2spk[u] for u in f.valid}
                                                        if s in genders).items()))}
                  for f in folds],
        "leakage_report": LEAKAGE_FILE,
    }
    protocol_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(protocol_dir / PROTOCOL_FILE, json.dumps(info, indent=1) + "\n")
    datadir.write_list(protocol_dir / LEAKAGE_FILE, leakage_lines(protocol, leakage, dependent, n_speakers,
                                                                  n_sentences, confounded, classes))
    return info


def confounded_speakers(utt2spk: Mapping[str, str], utt2emo: Mapping[str, str]) -> dict[str, list[str]]:
    """Known speakers who recorded only some of the classes -> the classes they did record.

    Speaker and emotion are then confounded: a model can score by recognising the voice, and a fold
    testing such a speaker lacks classes. (A corpus of acted emotions has none; a port had all.)"""
    classes = set(utt2emo.values())
    held: dict[str, set[str]] = {}
    for utt, spk in utt2spk.items():
        if spk not in UNKNOWN_SPEAKERS:
            held.setdefault(spk, set()).add(utt2emo[utt])
    return {spk: sorted(h) for spk, h in sorted(held.items()) if h != classes}


def leakage_lines(protocol: str, leakage: Sequence[dict], dependent: bool, n_speakers: int,
                  n_sentences: int | None, confounded: Mapping[str, Sequence[str]] | None = None,
                  classes: Sequence[str] = (), limit: int = 50) -> list[str]:
    lines = [f"# leakage report: protocol {protocol} ({'speaker-DEPENDENT' if dependent else 'speaker-independent'})",
             f"# {n_speakers} known speakers ('unknown' left out); "
             + (f"{n_sentences} distinct sentences (utt2sentence)" if n_sentences is not None
                else "no utt2sentence: sentence overlap not known"),
             "\t".join(["fold", "test_spk_in_train", "test_spk_in_valid", "valid_spk_in_train", "test_sentences",
                        "test_sentences_in_train", "test_utts_with_sentence_in_train"])]
    for row in leakage:
        lines.append("\t".join([row["fold"], ",".join(row["test_speakers_in_train"]) or "-",
                                ",".join(row["test_speakers_in_valid"]) or "-",
                                str(len(row["valid_speakers_in_train"])),
                                *(str(row.get(key, "-")) for key in ("test_sentences", "test_sentences_in_train",
                                                                     "test_utterances_with_sentence_in_train"))]))
    if confounded:
        lines.append(f"# speaker/emotion confounding: {len(confounded)} of {n_speakers} speakers recorded only some of "
                     f"the {len(classes)} classes (a model can score by recognising the voice; folds testing them "
                     "lack classes):")
        for spk, held in list(confounded.items())[:limit]:
            lines.append(f"#   {spk}: {','.join(held)} (no {','.join(c for c in classes if c not in held)})")
        if len(confounded) > limit:
            lines.append(f"#   ... and {len(confounded) - limit} more (protocol.json: confounded_speakers)")
    else:
        lines.append("# speaker/emotion confounding: none (every speaker recorded every class)")
    return lines


def read_protocol(protocol_dir: str | Path) -> dict:
    """Read ``protocol.json`` of ``data/folds/<protocol>`` (written by stage 2) for scoring and RESULTS.md."""
    path = Path(protocol_dir) / PROTOCOL_FILE
    if not path.is_file():
        raise FoldError(f"{path}: not found; rebuild the folds in the recipe folder: ./run.sh --stage 2 --stop_stage 2")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise FoldError(f"{path}: not valid JSON ({error}); rebuild the folds in the recipe folder: ./run.sh --stage 2 --stop_stage 2") from None
    missing = [key for key in ("name", "description", "speaker_dependent", "k", "n_folds", "folds") if key not in info]
    if missing:
        raise FoldError(f"{path}: lacks {missing}; rebuild the folds in the recipe folder: ./run.sh --stage 2 --stop_stage 2")
    return info
