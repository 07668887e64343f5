#!/usr/bin/env bash
# Stage 0 for emodb: the release -> Kaldi-style data directory (logic in serkit.corpora.emodb).
set -euo pipefail
corpus_root=; class_map=7class; out=data/all; strict=; switches=strict  # --strict / --no-strict
. ../TEMPLATE/utils/parse_options.sh
if [ ! -d "$corpus_root" ]; then
  echo "emodb root '$corpus_root' does not exist. Point the recipe at your copy:" >&2
  echo "  EMODB=/data/emodb ./run.sh   (or edit db.sh)" >&2
  echo 'Expected layout (ROOT is the Emo-DB folder):' >&2
  echo '  ROOT/wav/03a01Fa.wav ...            (or ROOT/wav_corpus/)' >&2
  echo '  ROOT/lablaut/03a01Faxx.lablaut ...  (optional: SAMPA phone labels for stage 1)' >&2
  exit 1
fi
python -m serkit.bin.prepare_corpus --corpus emodb --root "$corpus_root" --out "$out" --class-map "$class_map" \
  ${strict:+"--strict=$strict"}
