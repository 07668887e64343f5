"""Port a corpus serkit does not ship: write everything docs/porting.md asks for, ready to edit.

Usage (from the repository root)::

    python -m serkit.bin.new_corpus --name savee --language en --rate 44100 \\
        --speakers "DC:m JE:m JK:m KL:m" --emotions "a h sa n f d su" --protocol loso_speaker

Writes, for a release laid out as ``ROOT/<speaker>/<emotion code>/*.wav`` (edit the module for any
other layout):

* ``serkit/corpora/<name>.py``: the prep module (its facts: speakers and genders, emotion codes,
  the release's sample rate and channels, full-release counts once you know them);
* ``serkit/corpora/class_maps/<name>/<N>class.yaml``: every code as its own class (``ang hap sad neu``
  first when the codes are those names);
* the registry line in ``serkit/corpora/__init__.py``;
* ``tests/test_corpus_<name>.py``: a look-alike tree in that layout (tones written with soundfile)
  and the test that the module prepares it;
* ``egs/<name>/``: the recipe (``serkit.bin.new_recipe``). A language without a phone source
  (docs/porting.md) gets W2V2-MTL without its CTC head (``mtl_lambda: 0``) and the eGeMAPS floor.

Why one command: a corpus module written by hand from the guide is easy to get subtly wrong (the
missing-folder and altered-copy checks are the first to be left out); the skeleton has them from the start.
Existing files are kept unless ``--force``.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from serkit.bin import one_line_errors, setup_logging
from serkit.bin.new_recipe import recipe_files, write_recipe
from serkit.corpora import CORPORA
from serkit.errors import SerkitError
from serkit.data.folds import PROTOCOLS

logger = logging.getLogger(__name__)
PROG = "new_corpus"
#: Class names that keep their index across corpora (docs/porting.md: the class map).
SHARED_FIRST = ("ang", "hap", "sad", "neu")

MODULE = '''"""{title} (stage 0): ``ROOT/<speaker>/<emotion code>/*.wav`` -> data directory.

Written by ``python -m serkit.bin.new_corpus``; make the facts below those of your release
(docs/porting.md). A speaker folder, or a class folder missing under every speaker, is named in
prep_report.txt and the log; a class of the map with no utterance fails under --strict and warns
otherwise; a copy whose rates or channels differ from RELEASE_AUDIO is flagged as altered.
"""
from __future__ import annotations

from pathlib import Path

from serkit.corpora import ClassMap, load_class_map
from serkit.corpora.common import (PrepReport, ReleaseAudio, Utterance, check_codes, check_out_dir, count_differences,
                                   expected_class_counts, finish, keep, list_files, require_root)

CORPUS = "{name}"
LANGUAGE = "{language}"
#: Speaker folders of the full release -> gender ("f", "m"; None where unknown: then no utt2gender,
#: and validation speakers are not gender-balanced).
SPEAKERS = {speakers}
#: The corpus's own emotion codes: the class folder names.
EMOTION_CODES = {emotions}
#: Files per emotion code in the full release; fill in from the release's documentation to turn on
#: the full-release count check (empty: no check).
FULL_RELEASE_CODE_COUNTS: dict[str, int] = {{}}
#: The release's audio as distributed: other rates or channel counts mark an altered copy.
RELEASE_AUDIO = ReleaseAudio(rates=({rate},), channels=({channels},))
LAYOUT = """Expected layout (ROOT is the {name} folder):
  ROOT/<speaker>/<emotion code>/<name>.wav   speakers {speaker_list}; codes {code_list}"""


def prepare(corpus_root, class_map, out_dir, strict=None) -> PrepReport:
    root, out_dir = Path(corpus_root).absolute(), Path(out_dir).absolute()
    check_out_dir(out_dir)
    mapping = class_map if isinstance(class_map, ClassMap) else load_class_map(class_map, "{name}")
    check_codes(mapping, EMOTION_CODES, CORPUS)
    require_root(root, CORPUS, LAYOUT)
    report = PrepReport(CORPUS, root, out_dir, mapping, LANGUAGE, release_audio=RELEASE_AUDIO)
    utterances, speakers, codes = [], set(), set()
    for speaker, gender in SPEAKERS.items():
        folder = root / speaker
        if not folder.is_dir():
            report.missing.add("speaker folder", str(folder))
            continue
        speakers.add(speaker)
        for code in EMOTION_CODES:
            if not (folder / code).is_dir():
                report.notes.add("class folder absent for this speaker", str(folder / code))
                continue
            codes.add(code)
            for path in list_files(folder / code, report.skipped):
                utt = Utterance(corpus_id=f"{{code}}-{{path.stem}}", speaker=speaker, wav=path, code=code, gender=gender)
                if keep(utt, report) is not None:
                    utterances.append(utt)
    for code in EMOTION_CODES:
        if speakers and code not in codes:
            report.missing.add("class folder (under every speaker)", f"{{root}}/<speaker>/{{code}}")

    def check() -> list[str]:
        if not FULL_RELEASE_CODE_COUNTS:
            return []
        return (count_differences("emotion code", report.code_counts, FULL_RELEASE_CODE_COUNTS)
                + count_differences("class", report.class_counts,
                                    expected_class_counts(mapping, FULL_RELEASE_CODE_COUNTS)))

    return finish(report, utterances, looks_full=speakers == set(SPEAKERS) and bool(FULL_RELEASE_CODE_COUNTS),
                  strict=strict, check=check)
'''

CLASS_MAP = """# {name}: every emotion code as its own class (written by new_corpus). Merge or drop codes here;
# keep ang hap sad neu first so shared classes keep their index across corpora.
classes: [{classes}]
map:
{lines}
"""

TEST = '''"""{name}'s look-alike (written by ``python -m serkit.bin.new_corpus``): a small tree in the
release's layout, tones written with soundfile, prepared by serkit.corpora.{name}. Add the traps
your copy has (odd names, empty or truncated files) and check that each is a counted skip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from serkit.corpora.{name} import EMOTION_CODES, RELEASE_AUDIO, SPEAKERS, prepare
from serkit.data.datadir import read_map


def write_tree(root: Path, recorded: dict | None = None, per_code: int = 2, rate: int = RELEASE_AUDIO.rates[0],
               seconds: float | None = None) -> Path:
    """``recorded``: speaker -> the codes it recorded (default: every speaker, every code). Each file is
    a tone after 0.1 s of silence, lengths differing (a real release's do); ``seconds`` forces one length."""
    recorded = recorded or {{speaker: EMOTION_CODES for speaker in SPEAKERS}}
    for s_index, (speaker, codes) in enumerate(sorted(recorded.items())):
        for c_index, code in enumerate(codes):
            for k in range(per_code):
                length = seconds or 0.4 + 0.05 * ((s_index * 7 + c_index * 3 + k) % 9)
                t = np.arange(int(length * rate)) / rate
                tone = 0.3 * np.sin(2 * np.pi * (120 + 15 * c_index + 5 * s_index) * t) * (t > 0.1)
                path = root / speaker / code / f"{{k:03d}}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(path), tone.astype(np.float32), rate)
    return root


def test_lookalike_is_prepared(tmp_path):
    report = prepare(write_tree(tmp_path / "{name}"), "{class_map}", tmp_path / "data", strict=False)
    emo = read_map(tmp_path / "data" / "utt2emo")
    assert len(emo) == 2 * len(SPEAKERS) * len(EMOTION_CODES) and not report.skipped.counts
    assert report.warnings == []  # every class present, nothing missing, audio as the release's
'''


def parse_speakers(text: str) -> dict[str, str | None]:
    """``"DC:m JE:f X"`` -> ``{{"DC": "m", "JE": "f", "X": None}}``."""
    speakers: dict[str, str | None] = {}
    for item in text.split():
        name, _, gender = item.partition(":")
        if gender not in ("", "f", "m") or not re.fullmatch(r"[A-Za-z0-9_.]+", name):
            raise SerkitError(f"--speakers: {item!r} is not SPEAKER or SPEAKER:f / SPEAKER:m")
        speakers[name] = gender or None
    if len(speakers) < 3:
        raise SerkitError("--speakers: give at least 3 speaker folder names (test, validation, training)")
    return speakers


def class_order(codes: list[str]) -> list[str]:
    """The codes with the shared classes first, in their shared order."""
    return [c for c in SHARED_FIRST if c in codes] + [c for c in codes if c not in SHARED_FIRST]


def corpus_files(name: str, language: str, speakers: dict[str, str | None], codes: list[str], rate: int,
                 channels: int, title: str) -> dict[str, str]:
    """Repository-relative path -> content of the module, class map and look-alike test."""
    classes = class_order(codes)
    class_map = f"{len(classes)}class"
    lines = "\n".join(f'  "{code}": "{code}"' for code in classes)
    fields = dict(name=name, language=language, speakers=repr(speakers), emotions=repr(tuple(codes)), rate=rate,
                  channels=channels, title=title, speaker_list=" ".join(speakers), code_list=" ".join(codes),
                  class_map=class_map)
    return {f"serkit/corpora/{name}.py": MODULE.format(**fields),
            f"serkit/corpora/class_maps/{name}/{class_map}.yaml": CLASS_MAP.format(
                name=name, classes=", ".join(f'"{c}"' for c in classes), lines=lines),
            f"tests/test_corpus_{name}.py": TEST.format(**fields)}


def register(init: Path, name: str) -> bool:
    """Add ``name`` to ``CORPORA`` in ``serkit/corpora/__init__.py`` (False: already there)."""
    text = init.read_text(encoding="utf-8")
    if re.search(rf'^\s+"{re.escape(name)}": ', text, flags=re.M):
        return False
    match = re.search(r"^CORPORA = \{\n(.*?)^\}", text, flags=re.M | re.S)
    if match is None:
        raise SerkitError(f"{init}: no 'CORPORA = {{ ... }}' block; add the line by hand (docs/porting.md)")
    line = f'    "{name}": ("serkit.corpora.{name}:prepare", "{name}"),\n'
    init.write_text(text[:match.end(1)] + line + text[match.end(1):], encoding="utf-8")
    return True


def layout_text(name: str, files: dict[str, str]) -> str:
    """The LAYOUT the module just written states (local/data.sh echoes it when the root is wrong)."""
    module = files[f"serkit/corpora/{name}.py"]
    return module.split('LAYOUT = """', 1)[1].split('"""', 1)[0]


@one_line_errors(PROG)
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Write the prep module, class map, look-alike test "
                                     "and recipe of a corpus serkit does not ship (docs/porting.md).")
    parser.add_argument("--name", required=True, help="corpus and recipe name (a Python identifier, e.g. savee)")
    parser.add_argument("--language", required=True, help="language code written to data/all/language (en, de, zh, "
                        "...; docs/porting.md says which have phone sources)")
    parser.add_argument("--speakers", required=True, help='speaker folders with gender, e.g. "DC:m JE:m S3"')
    parser.add_argument("--emotions", required=True, help='emotion codes = class folder names, e.g. "ang hap sad neu"')
    parser.add_argument("--rate", type=int, default=16000, help="the release's sample rate in Hz (default 16000)")
    parser.add_argument("--channels", type=int, default=1, help="the release's channel count (default 1)")
    parser.add_argument("--protocol", default="loso_speaker", choices=PROTOCOLS, help="default fold protocol")
    parser.add_argument("--kfold", type=int, help="folds of a k-fold protocol")
    parser.add_argument("--title", help="one line describing the corpus")
    parser.add_argument("--repo", default=".", help="repository root (default: .)")
    parser.add_argument("--force", action="store_true", help="rewrite files that exist")
    args = parser.parse_args(argv)
    setup_logging(timestamps=False)
    if not args.name.isidentifier() or args.name != args.name.lower():
        raise SerkitError(f"--name {args.name!r}: use a lower-case Python identifier (it names a module)")
    repo = Path(args.repo)
    init = repo / "serkit" / "corpora" / "__init__.py"
    if not init.is_file() or not (repo / "egs" / "TEMPLATE" / "ser.sh").is_file():
        raise SerkitError(f"{repo.absolute()} is not a serkit checkout: run from the repository root or give --repo")
    codes = args.emotions.split()
    if len(codes) < 2 or len(set(codes)) != len(codes):
        raise SerkitError(f"--emotions {args.emotions!r}: give two or more distinct codes")
    title = args.title or f"{args.name} ({args.language})"
    files = corpus_files(args.name, args.language, parse_speakers(args.speakers), codes, args.rate, args.channels,
                         title)
    for rel, content in files.items():
        path = repo / rel
        if path.exists() and not args.force:
            logger.info("kept existing %s (--force rewrites it)", path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(path)
    if register(init, args.name):
        print(f"{init} (registered {args.name})")
    CORPORA.setdefault(args.name, (f"serkit.corpora.{args.name}:prepare", args.name))  # for recipe_files below
    recipe = recipe_files(args.name, args.name, args.name.upper(), f"{len(codes)}class", args.protocol, args.kfold,
                          f"{title}, W2V2-MTL and the eGeMAPS floor, {args.protocol} folds.",
                          models="w2v2_mtl egemaps_svm", language=args.language, layout=layout_text(args.name, files),
                          transcripts=False)
    for path in write_recipe(repo / "egs", args.name, recipe, args.force):
        print(path)
    print(f"next: edit {files and list(files)[0]} to your release, run its test "
          f"(python -m pytest tests/test_corpus_{args.name}.py), then egs/{args.name}/run.sh (docs/porting.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
