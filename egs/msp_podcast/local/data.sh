#!/usr/bin/env bash
# Stage 0 for msp_podcast: the release -> Kaldi-style data directory (logic in serkit.corpora.msp_podcast).
set -euo pipefail
corpus_root=; class_map=8class; out=data/all; strict=; switches=strict  # --strict / --no-strict
. ../TEMPLATE/utils/parse_options.sh
if [ ! -d "$corpus_root" ]; then
  echo "msp_podcast root '$corpus_root' does not exist. Point the recipe at your copy:" >&2
  echo "  MSP_PODCAST=/data/msp_podcast ./run.sh   (or edit db.sh)" >&2
  echo 'Expected layout (ROOT is the MSP-Podcast folder):' >&2
  echo '  ROOT/Audios/<FileName>.wav' >&2
  echo '  ROOT/Labels/labels_consensus.csv   (older releases: labels_concensus.csv)' >&2
  echo '  ROOT/Labels/labels_detailed.csv    (optional: one row per annotator, gives utt2votes)' >&2
  echo '  ROOT/Partitions.txt                (optional: '\''Split; FileName'\'' lines, cross-checked)' >&2
  echo '  ROOT/Transcripts/<utterance>.txt   (optional: text for stage 1)' >&2
  exit 1
fi
python -m serkit.bin.prepare_corpus --corpus msp_podcast --root "$corpus_root" --out "$out" --class-map "$class_map" \
  ${strict:+"--strict=$strict"}
