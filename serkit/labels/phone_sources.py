"""Phone sources for languages other than English, mapped to the six W2V2-MTL phone classes.

The emotion-phoneme task (stage 1, :mod:`serkit.labels.emophone`) needs, per utterance, a sequence of
coarse classes: S (plosives, affricates), F (fricatives), N (nasals), L (liquids, glides), V
(unstressed vowels), VS (stressed vowels). English gets them from the G2P (ARPAbet with stress).
Text is never run through another language's G2P; instead each language has its own source
(docs/emophone.md documents every mapping):

* German (Emo-DB): the corpus's own SAMPA phone labels (``lablaut/``, copied by stage 0 into
  ``utt2sampa``). Stress marks (``"`` or ``'`` primary, ``%`` secondary) are used where a file
  carries them: the next vowel is VS, the other vowels V. A file without any stress mark falls back
  to a vowel-quality rule: the reduced vowels schwa ``@`` and vocalic r ``6`` are V, full vowels VS.
* Mandarin (ESD 0001-0010): ``pypinyin`` initials and finals (with tone). Initials map by manner;
  a final splits into its medial glide (i/u/ü before another vowel: L), its nucleus (V for the
  neutral tone, VS for tones 1-4: the neutral-tone syllable is Mandarin's unstressed one) and its
  coda (-n/-ng: N; erhua -r: L).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# ------------------------------------------------------------------------------------ German

#: German SAMPA consonants -> class. j and the r sounds join the liquids/glides, as English Y and R do.
SAMPA_CONSONANTS = {
    **dict.fromkeys("p b t d k g Q ? pf ts tS dZ".split(), "S"),
    **dict.fromkeys("f v s z S Z C x h".split(), "F"),
    **dict.fromkeys("m n N".split(), "N"),
    **dict.fromkeys("l r R j w".split(), "L"),
}
SAMPA_VOWEL_CHARS = set("iIyYeE2@9aoOuU6")
#: Reduced vowels: unstressed by nature (the fallback rule's V).
SAMPA_REDUCED = frozenset({"@", "6"})
STRESS_MARKS = ('"', "'", "%")
#: Labels that are not phones: pauses, silence, boundaries.
SAMPA_PAUSES = frozenset({".", "_", "#", "-", "<p:>", "p:", "<p>", "sil", "pau", "<sil>", "<nib>", "$p"})


def _sampa_vowel(label: str) -> bool:
    core = label.replace(":", "").replace("~", "")
    return bool(core) and set(core) <= SAMPA_VOWEL_CHARS


@dataclass
class SourceStats:
    """What a phone source made of an utterance set, for emophone_report.txt."""

    unknown: Counter = field(default_factory=Counter)  # labels / characters without a class
    rule: Counter = field(default_factory=Counter)  # which stress rule each utterance used


def sampa_classes(labels: list[str], stats: SourceStats) -> list[str]:
    """German SAMPA labels of one utterance -> phone classes (see the module docstring)."""
    marked = any(label.startswith(STRESS_MARKS) for label in labels)
    if labels:
        rule = "stress marks in the label file" if marked else "no stress mark: @ and 6 are V, full vowels VS"
        stats.rule[rule] += 1
    classes, stress_pending = [], False
    for raw in labels:
        label = raw
        while label.startswith(STRESS_MARKS):
            stress_pending, label = True, label[1:]
        label = label.rstrip("=")  # syllabic consonants (n=) keep their manner
        if not label or label in SAMPA_PAUSES:
            continue
        if label in SAMPA_CONSONANTS:
            classes.append(SAMPA_CONSONANTS[label])
        elif _sampa_vowel(label):
            if marked:
                classes.append("VS" if stress_pending else "V")
                stress_pending = False
            else:
                classes.append("V" if label.replace(":", "") in SAMPA_REDUCED else "VS")
        else:
            stats.unknown[raw] += 1
    return classes


# ---------------------------------------------------------------------------------- Mandarin

PINYIN_INITIALS = {
    **dict.fromkeys("b p d t g k z c zh ch j q".split(), "S"),
    **dict.fromkeys("f s sh x h r".split(), "F"),
    **dict.fromkeys("m n".split(), "N"),
    "l": "L",
}
_TONE_RE = re.compile(r"^([a-zü]+?)([1-5])?$")


def final_classes(final: str) -> list[str]:
    """A pypinyin final with tone (``iang1``, ``en5``, ``er2``) -> medial, nucleus, coda classes."""
    match = _TONE_RE.match(final.replace("ü", "v"))
    if not match:
        raise ValueError(f"not a pinyin final: {final!r}")
    body, tone = match.group(1), match.group(2) or "5"
    vowel = "V" if tone == "5" else "VS"
    coda = []
    if body != "er" and body.endswith("r") and len(body) > 1:
        body, coda = body[:-1], ["L"]  # erhua
    if body.endswith("ng") and len(body) > 2:
        body, coda = body[:-2], ["N"] + coda
    elif body.endswith("n") and len(body) > 1:
        body, coda = body[:-1], ["N"] + coda
    medial = []
    if len(body) > 1 and body[0] in "iuv" and body != "er":
        body, medial = body[1:], ["L"]
    return medial + [vowel] + coda


def pinyin_classes(text: str, stats: SourceStats) -> tuple[list[str], list[str]]:
    """Chinese text -> (pinyin initials/finals as written, phone classes). Non-Han characters are
    counted in ``stats.unknown`` (punctuation excluded) and give no phone."""
    from pypinyin import Style, lazy_pinyin  # imported here: only Mandarin data dirs need it

    initials = lazy_pinyin(text, style=Style.INITIALS, strict=True, errors="ignore")
    finals = lazy_pinyin(text, style=Style.FINALS_TONE3, strict=True, neutral_tone_with_five=True, errors="ignore")
    for char in text:
        if not ("\u4e00" <= char <= "\u9fff") and char.isalnum():
            stats.unknown[char] += 1
    phones, classes = [], []
    for initial, final in zip(initials, finals):
        if initial:
            phones.append(initial)
            classes.append(PINYIN_INITIALS[initial])
        phones.append(final)
        classes += final_classes(final)
    stats.rule["pinyin tones: neutral tone V, tones 1-4 VS"] += 1
    return phones, classes
