#!/usr/bin/env bash
# RAVDESS speech (24 actors, 8 emotions), W2V2-MTL and the eGeMAPS floor, leave-one-speaker-out.
# Class map 8class, protocol loso_speaker. Stages and options: ../TEMPLATE/ser.sh --help.
#   RAVDESS=/data/ravdess ./run.sh                               # everything
#   ./run.sh --stage 2 --stop_stage 2 --protocol random_kfold      # folds of another protocol
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
. ../TEMPLATE/utils/recipe_command.sh && record_recipe_command "$@"  # RESULTS.md: the user's words
exec ../TEMPLATE/ser.sh --corpus_root "$RAVDESS" --class_map 8class --protocol loso_speaker --models "w2v2_mtl egemaps_svm" "$@"
