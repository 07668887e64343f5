#!/usr/bin/env bash
# Stage 0 for ravdess: the release -> Kaldi-style data directory (logic in serkit.corpora.ravdess).
set -euo pipefail
corpus_root=; class_map=8class; out=data/all; strict=; switches=strict  # --strict / --no-strict
. ../TEMPLATE/utils/parse_options.sh
if [ ! -d "$corpus_root" ]; then
  echo "ravdess root '$corpus_root' does not exist. Point the recipe at your copy:" >&2
  echo "  RAVDESS=/data/ravdess ./run.sh   (or edit db.sh)" >&2
  echo 'Expected layout (ROOT is the folder holding the actors, e.g. Audio_Speech_Actors_01-24):' >&2
  echo '  ROOT/Actor_01 .. Actor_24/03-01-EE-II-SS-RR-AA.wav' >&2
  exit 1
fi
python -m serkit.bin.prepare_corpus --corpus ravdess --root "$corpus_root" --out "$out" --class-map "$class_map" \
  ${strict:+"--strict=$strict"}
