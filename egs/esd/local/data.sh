#!/usr/bin/env bash
# Stage 0 for esd: the release -> Kaldi-style data directory (logic in serkit.corpora.esd).
set -euo pipefail
corpus_root=; class_map=5class; out=data/all; strict=; switches=strict  # --strict / --no-strict
. ../TEMPLATE/utils/parse_options.sh
if [ ! -d "$corpus_root" ]; then
  echo "esd root '$corpus_root' does not exist. Point the recipe at your copy:" >&2
  echo "  ESD=/data/esd ./run.sh   (or edit db.sh)" >&2
  echo 'Expected layout (ROOT is the folder holding the speaker folders):' >&2
  echo '  ROOT/0011/0011.txt                                   (id<TAB>text<TAB>emotion)' >&2
  echo '  ROOT/0011/Angry/[train|evaluation|test/]0011_000351.wav ...' >&2
  exit 1
fi
python -m serkit.bin.prepare_corpus --corpus esd --root "$corpus_root" --out "$out" --class-map "$class_map" \
  ${strict:+"--strict=$strict"}
