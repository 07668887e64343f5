#!/usr/bin/env bash
# Stage 0 for crema_d: the release -> Kaldi-style data directory (logic in serkit.corpora.crema_d).
set -euo pipefail
corpus_root=; class_map=6class; out=data/all; strict=; switches=strict  # --strict / --no-strict
. ../TEMPLATE/utils/parse_options.sh
if [ ! -d "$corpus_root" ]; then
  echo "crema_d root '$corpus_root' does not exist. Point the recipe at your copy:" >&2
  echo "  CREMA_D=/data/crema_d ./run.sh   (or edit db.sh)" >&2
  echo 'Expected layout (ROOT is the CREMA-D folder):' >&2
  echo '  ROOT/AudioWAV/<actor>_<SENT>_<EMO>_<LEVEL>.wav   e.g. 1001_DFA_ANG_XX.wav' >&2
  echo '  ROOT/VideoDemographics.csv                        (optional: gives utt2gender)' >&2
  echo '  ROOT/processedResults/tabulatedVotes.csv          (optional: the raters'\'' votes, gives utt2votes)' >&2
  exit 1
fi
python -m serkit.bin.prepare_corpus --corpus crema_d --root "$corpus_root" --out "$out" --class-map "$class_map" \
  ${strict:+"--strict=$strict"}
