"""Corpus preparation (stage 0), the registry of corpora, and the class maps they apply.

A class map is configuration, not code: a YAML file that lists the classes in index order and
sends each corpus label code to one of them (``exc: hap`` merges excited into happy). Shipped maps
live in ``serkit/corpora/class_maps/<corpus>/<name>.yaml``; users can pass their own file instead.

The corpus contract (docs/porting.md): a module ``serkit/corpora/<name>.py`` with an entry point
``prepare(corpus_root, class_map, out_dir, strict=None) -> report`` that writes a data directory
(docs/formats.md), registered in :data:`CORPORA`; ``python -m serkit.bin.prepare_corpus --corpus
<name>`` runs it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from serkit.errors import SerkitError

CLASS_MAP_DIR = Path(__file__).resolve().parent / "class_maps"
#: Corpus name -> ``module:function`` of its stage-0 entry point, and the folder of its class maps.
#: ESD's two language halves are two entries of one module (a data dir holds one language).
CORPORA = {
    "iemocap": ("serkit.corpora.iemocap:prepare", "iemocap"),
    "ravdess": ("serkit.corpora.ravdess:prepare", "ravdess"),
    "crema_d": ("serkit.corpora.crema_d:prepare", "crema_d"),
    "emodb": ("serkit.corpora.emodb:prepare", "emodb"),
    "esd": ("serkit.corpora.esd:prepare_english", "esd"),
    "esd_zh": ("serkit.corpora.esd:prepare_mandarin", "esd"),
    "msp_podcast": ("serkit.corpora.msp_podcast:prepare", "msp_podcast"),
}
#: The corpus whose maps a bare name such as ``4class`` means when no corpus is given (history).
DEFAULT_CORPUS = "iemocap"


#: How to skip the full-release count check, as every count error says it: the first form works in
#: the recipe folder where stage 0 ran (run.sh passes --no-strict on to the preparation).
NO_STRICT_HINT = ("If this copy is intentionally partial or modified, rerun without the count check: "
                  "./run.sh --no-strict (in the recipe folder; prepare_corpus --no-strict, or strict=False in Python).")


class CorpusError(SerkitError):
    """A corpus copy or a corpus configuration (class map) is not what data preparation expects."""


@dataclass(frozen=True)
class ClassMap:
    """Classes in index order plus the corpus-code -> class mapping."""

    name: str
    classes: tuple[str, ...]
    mapping: dict[str, str]
    source: Path

    def label(self, code: str) -> str | None:
        """The class a corpus code maps to, or None if the code is excluded."""
        return self.mapping.get(code)


def corpus_names() -> list[str]:
    """Names accepted by ``prepare_corpus --corpus``."""
    return sorted(CORPORA)


def get_preparer(corpus: str) -> Callable:
    """The registered ``prepare(corpus_root, class_map, out_dir, strict=None)`` of ``corpus``."""
    if corpus not in CORPORA:
        raise CorpusError(f"unknown corpus {corpus!r}; registered corpora: {', '.join(corpus_names())} "
                          "(a new corpus is a module in serkit/corpora/ plus an entry in CORPORA: docs/porting.md)")
    module, _, function = CORPORA[corpus][0].partition(":")
    return getattr(importlib.import_module(module), function)


def _map_dir(corpus: str) -> Path:
    return CLASS_MAP_DIR / (CORPORA[corpus][1] if corpus in CORPORA else corpus)


def shipped_class_maps(corpus: str = DEFAULT_CORPUS) -> list[str]:
    """Names of the class maps shipped for ``corpus`` (file stems in ``class_maps/<corpus>/``)."""
    return sorted(path.stem for path in _map_dir(corpus).glob("*.yaml"))


def _resolve(name_or_path: str | Path, corpus: str) -> Path:
    """A shipped name (``4class``) or a path to a YAML file -> the file to read."""
    text = str(name_or_path)
    looks_like_path = text.endswith((".yaml", ".yml")) or "/" in text or Path(text).is_file()
    if looks_like_path:
        path = Path(text)
        if not path.is_file():
            raise CorpusError(f"class map file {path} not found (give a YAML file or one of "
                              f"{shipped_class_maps(corpus)})")
        return path
    path = _map_dir(corpus) / f"{text}.yaml"
    if not path.is_file():
        raise CorpusError(f"unknown class map {text!r} for {corpus}: shipped maps are {shipped_class_maps(corpus)}, "
                          "or give the path of a YAML file with 'classes' and 'map'")
    return path


def load_class_map(name_or_path: str | Path, corpus: str = DEFAULT_CORPUS) -> ClassMap:
    """Load and check a class map; every mistake raises :class:`CorpusError` naming the file.

    Checked: ``classes`` is a non-empty list of unique names; ``map`` sends strings to listed
    classes; every class receives at least one code (else it would be an empty class that still
    takes a softmax output and a token suffix).
    """
    path = _resolve(name_or_path, corpus)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CorpusError(f"{path}: not a readable YAML class map ({error})") from None
    if not isinstance(content, dict) or "classes" not in content or "map" not in content:
        raise CorpusError(f"{path}: a class map needs the keys 'classes' (list) and 'map' (code: class)")
    classes, mapping = content["classes"], content["map"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise CorpusError(f"{path}: 'classes' must be a non-empty list of class names, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise CorpusError(f"{path}: 'classes' lists a class twice: {classes}")
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise CorpusError(f"{path}: 'map' must map corpus codes to class names (strings), got {mapping!r}")
    unknown_targets = sorted(set(mapping.values()) - set(classes))
    if unknown_targets:
        raise CorpusError(f"{path}: 'map' sends codes to {unknown_targets}, which 'classes' {classes} does not list")
    empty = [c for c in classes if c not in mapping.values()]
    if empty:
        raise CorpusError(f"{path}: classes {empty} receive no corpus code in 'map' (they would stay empty)")
    name = path.stem if path.parent.parent == CLASS_MAP_DIR else str(path)
    return ClassMap(name=name, classes=tuple(classes), mapping=dict(mapping), source=path)
