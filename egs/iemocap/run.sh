#!/usr/bin/env bash
# IEMOCAP, 4 emotions, W2V2-MTL (multi-task wav2vec 2.0 with emotion-phoneme CTC), 10-fold
# leave-one-speaker-out. Stages and options: ../TEMPLATE/ser.sh --help.
#   IEMOCAP=/data/IEMOCAP_full_release ./run.sh            # everything
#   ./run.sh --stage 3 --stop_stage 4 --model w2v2_mtl --lambdas "0 0.001 0.01 0.1 1"   # the paper's lambda ablation
#   ./run.sh --stage 3 --models "w2v2_mtl tim_net sta_crnn egemaps_svm"   # every family, one comparison table
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
. ../TEMPLATE/utils/recipe_command.sh && record_recipe_command "$@"  # RESULTS.md: the user's words
exec ../TEMPLATE/ser.sh --corpus_root "$IEMOCAP" --models "w2v2_mtl egemaps_svm" "$@"
