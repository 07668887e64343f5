#!/usr/bin/env bash
# The embedded default: a synthetic IEMOCAP (espeak-ng speech, exact IEMOCAP_full_release layout) and
# a tiny randomly initialised wav2vec 2.0, through the same stages as egs/iemocap. Runs on a CPU in
# minutes; it shows that every stage works, not what the method scores (see RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
. ../TEMPLATE/utils/recipe_command.sh && record_recipe_command "$@"  # RESULTS.md: the user's words
# The default compares W2V2-MTL with the classical floor (eGeMAPS + SVM) on the same folds;
# --model NAME or --models "..." choose others (w2v2_mtl tim_net sta_crnn egemaps_svm ssl_probe).
# Stage 0 also builds a tiny random encoder of each type, so the encoder comparison runs offline:
#   ./run.sh --stage 3 --model ssl_probe \
#     --encoders "db/tiny_w2v2 db/tiny_hubert db/tiny_wavlm db/tiny_data2vec db/tiny_whisper"
exec ../TEMPLATE/ser.sh --corpus_root "$MINI_IEMOCAP" --models "w2v2_mtl egemaps_svm" "$@"
