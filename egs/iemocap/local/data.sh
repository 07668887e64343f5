#!/usr/bin/env bash
# Stage 0 for IEMOCAP: IEMOCAP_full_release -> Kaldi-style data directory (logic in serkit.corpora.iemocap).
set -euo pipefail
corpus_root=; class_map=4class; out=data/all; strict=; switches=strict  # --strict / --no-strict
. ../TEMPLATE/utils/parse_options.sh
if [ ! -d "$corpus_root" ]; then
  echo "IEMOCAP root '$corpus_root' does not exist. Point the recipe at your copy:" >&2
  echo "  IEMOCAP=/data/IEMOCAP_full_release ./run.sh   (or edit db.sh)" >&2
  echo "It must hold Session1..Session5/{dialog/EmoEvaluation,dialog/transcriptions,sentences/wav}." >&2
  exit 1
fi
python -m serkit.bin.prepare_iemocap --root "$corpus_root" --out "$out" --class-map "$class_map" \
  ${strict:+"--strict=$strict"}
