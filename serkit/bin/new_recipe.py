"""Start a recipe for a registered corpus: writes the thin files of ``egs/<name>/`` (no hand copying).

Usage::

    python -m serkit.bin.new_recipe --name ravdess --protocol loso_speaker
    python -m serkit.bin.new_recipe --name esd_zh --corpus esd_zh --db-var ESD --protocol predefined

Writes ``run.sh`` (the corpus's defaults, then ``../TEMPLATE/ser.sh``), ``db.sh`` (where the corpus
lives), ``cmd.sh``, ``path.sh``, ``conf/w2v2_mtl.yaml`` (the recipe's overrides of the default family's
shared config: none) and
``local/data.sh`` (stage 0: ``prepare_corpus --corpus <corpus>``). The corpus must be registered
(``serkit/corpora/__init__.py``: docs/porting.md). Existing files are kept unless ``--force``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from serkit.bin import one_line_errors, setup_logging
from serkit.bin.prepare_corpus import default_class_map
from serkit.corpora import CORPORA, corpus_names, get_preparer
from serkit.errors import SerkitError
from serkit.data.folds import PROTOCOLS

logger = logging.getLogger(__name__)
PROG = "new_recipe"

RUN_SH = """#!/usr/bin/env bash
# {title}
# Class map {class_map}, protocol {protocol}. Stages and options: ../TEMPLATE/ser.sh --help.
#   {var}=/data/{name} ./run.sh                               # everything
#   ./run.sh --stage 2 --stop_stage 2 --protocol random_kfold      # folds of another protocol
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
. ../TEMPLATE/utils/recipe_command.sh && record_recipe_command "$@"  # RESULTS.md: the user's words
exec ../TEMPLATE/ser.sh --corpus_root "${var}" --class_map {class_map} --protocol {protocol}{kfold}{models} "$@"
"""
DB_SH = """# Where the corpus lives. Edit the default, or override per run: {var}=/data/{name} ./run.sh
{var}=${{{var}:-/path/to/{name}}}
"""
CMD_SH = """# How jobs run (Kaldi convention). serkit-run's local backend runs jobs in parallel on this machine,
# at most --max-jobs at once (run.sh passes --nj); each job's output goes to its own log.
export train_cmd="serkit-run --backend local"
# On a Slurm cluster (docs/cluster.md): one array job per stage, --nj tasks at a time, and
# ../../conf/slurm.conf maps --gpu/--mem/--time/--partition/--account to sbatch options.
# export train_cmd="serkit-run --backend slurm --config ../../conf/slurm.conf --gpu 1 --mem 32G --time 1-00:00:00"
"""
PATH_SH = """# Activates serkit's environment (built by tools/install.sh).
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/env.sh"
"""
TRAIN_YAML = """# {name} runs the shared config (../../conf/w2v2_mtl.yaml) unchanged; other families read
# conf/<family>.yaml here when it exists.
# Put site-specific changes here, e.g. a local copy of the encoder for offline machines:
#   encoder_source: /models/wav2vec2-base
{{}}
"""
TRAIN_YAML_NO_PHONES = """# {name} overrides the shared config (../../conf/w2v2_mtl.yaml) because
# {why}: there are no emotion-phoneme targets, so the CTC head is off (single-task wav2vec 2.0).
# Once the prep module writes transcripts in a language with a phone source, delete mtl_lambda.
# Other families read conf/<family>.yaml here when it exists.
# Put site-specific changes here, e.g. a local copy of the encoder for offline machines:
#   encoder_source: /models/wav2vec2-base
mtl_lambda: 0
"""
#: Default families of a generated recipe whose language has no phone source: the model without a
#: CTC head (conf/w2v2_mtl.yaml above) and the floor every comparison shows.
NO_PHONES_MODELS = "w2v2_mtl egemaps_svm"
#: Languages whose phones come from the text (docs/emophone.md); German needs the corpus's own SAMPA
#: label files (a module that writes utt2sampa says so with ``PHONE_LABELS = True``).
TEXT_PHONE_LANGUAGES = ("en", "zh")


def has_phone_source(language: str, phone_labels: bool = False) -> bool:
    """Whether stage 1 can give this corpus emotion-phoneme targets (else every utterance trains emotion-only)."""
    return language in TEXT_PHONE_LANGUAGES or (language == "de" and phone_labels)
DATA_SH = """#!/usr/bin/env bash
# Stage 0 for {name}: the release -> Kaldi-style data directory (logic in {module}).
set -euo pipefail
corpus_root=; class_map={class_map}; out=data/all; strict=; switches=strict  # --strict / --no-strict
. ../TEMPLATE/utils/parse_options.sh
if [ ! -d "$corpus_root" ]; then
  echo "{name} root '$corpus_root' does not exist. Point the recipe at your copy:" >&2
  echo "  {var}=/data/{name} ./run.sh   (or edit db.sh)" >&2
{layout}  exit 1
fi
python -m serkit.bin.prepare_corpus --corpus {corpus} --root "$corpus_root" --out "$out" --class-map "$class_map" \\
  ${{strict:+"--strict=$strict"}}
"""


def recipe_files(name: str, corpus: str, var: str, class_map: str, protocol: str, kfold: int | None,
                 title: str, models: str | None = None, language: str | None = None,
                 layout: str | None = None, transcripts: bool = True) -> dict[str, str]:
    """Relative path -> content of every file of the recipe.

    ``language`` and ``layout`` default to the corpus module's ``LANGUAGE`` and ``LAYOUT``. A language
    without a phone source gets ``mtl_lambda: 0`` in conf/w2v2_mtl.yaml and, unless ``models`` says
    otherwise, the eGeMAPS floor: before, such a recipe trained a CTC head on empty targets. So does a
    corpus whose prep module writes no transcripts (``transcripts=False``: new_corpus's skeleton)."""
    module = CORPORA[corpus][0].split(":")[0]
    phone_labels = False
    if language is None or layout is None:
        loaded = importlib.import_module(module)
        layout = getattr(loaded, "LAYOUT", "") if layout is None else layout
        language = getattr(loaded, "LANGUAGE", "en") if language is None else language
        phone_labels = bool(getattr(loaded, "PHONE_LABELS", False))
    phones = transcripts and has_phone_source(language, phone_labels)
    why = (f"its language ({language}) has no phone source in serkit (docs/porting.md)"
           if not has_phone_source(language, phone_labels) else "its prep module writes no transcripts")
    models = models if models or phones else NO_PHONES_MODELS
    layout_lines = "".join(f"  echo {_quote(line)} >&2\n" for line in layout.splitlines())
    fields = dict(name=name, corpus=corpus, var=var, class_map=class_map, protocol=protocol, title=title,
                  language=language, why=why,
                  module=module, layout=layout_lines, kfold=f" --kfold {kfold}" if kfold else "",
                  models=f' --models "{models}"' if models else "")
    return {"run.sh": RUN_SH.format(**fields), "db.sh": DB_SH.format(**fields), "cmd.sh": CMD_SH,
            "path.sh": PATH_SH, "conf/w2v2_mtl.yaml": (TRAIN_YAML if phones else TRAIN_YAML_NO_PHONES).format(**fields),
            "local/data.sh": DATA_SH.format(**fields)}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def write_recipe(egs: Path, name: str, files: dict[str, str], force: bool = False) -> list[Path]:
    written = []
    for rel, content in files.items():
        path = egs / name / rel
        if path.exists() and not force:
            logger.info("kept existing %s (--force rewrites it)", path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        if rel.endswith(".sh") and rel not in ("db.sh", "cmd.sh", "path.sh"):
            os.chmod(path, 0o755)
        written.append(path)
    return written


@one_line_errors(PROG)
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Write the thin files of a new recipe egs/<name>/.")
    parser.add_argument("--name", required=True, help="recipe folder name under egs/")
    parser.add_argument("--corpus", help=f"registered corpus ({', '.join(corpus_names())}; default: --name)")
    parser.add_argument("--db-var", help="db.sh variable holding the corpus location (default: NAME in capitals)")
    parser.add_argument("--class-map", help="default class map (default: the corpus's full inventory)")
    parser.add_argument("--protocol", default="loso_speaker", choices=PROTOCOLS, help="default fold protocol")
    parser.add_argument("--kfold", type=int, help="folds of a k-fold protocol (default: ser.sh's 5)")
    parser.add_argument("--models", help="default model families of run.sh, e.g. \"w2v2_mtl egemaps_svm\" "
                        f"(default: ser.sh's; \"{NO_PHONES_MODELS}\" for a language without a phone source)")
    parser.add_argument("--title", help="one line describing the recipe (first comment of run.sh)")
    parser.add_argument("--egs", default="egs", help="the egs folder (default: ./egs)")
    parser.add_argument("--force", action="store_true", help="rewrite files that exist")
    args = parser.parse_args(argv)
    setup_logging(timestamps=False)
    corpus = args.corpus or args.name
    get_preparer(corpus)  # a clear error for an unregistered corpus
    if not (Path(args.egs) / "TEMPLATE" / "ser.sh").is_file():
        raise SerkitError(f"{args.egs}/TEMPLATE/ser.sh not found: run from the repository root or give --egs")
    class_map = args.class_map or default_class_map(corpus)
    title = args.title or f"{corpus}, {class_map}, W2V2-MTL (wav2vec 2.0 + emotion-phoneme CTC), {args.protocol} folds."
    files = recipe_files(args.name, corpus, args.db_var or args.name.upper(), class_map, args.protocol, args.kfold,
                         title, args.models)
    for path in write_recipe(Path(args.egs), args.name, files, args.force):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
