#!/usr/bin/env bash
# CREMA-D (91 actors, 6 emotions), W2V2-MTL and the eGeMAPS floor, speaker-grouped 5-fold balanced by gender.
# Class map 6class, protocol speaker_kfold. Stages and options: ../TEMPLATE/ser.sh --help.
#   CREMA_D=/data/crema_d ./run.sh                               # everything
#   ./run.sh --stage 2 --stop_stage 2 --protocol random_kfold      # folds of another protocol
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
. ../TEMPLATE/utils/recipe_command.sh && record_recipe_command "$@"  # RESULTS.md: the user's words
exec ../TEMPLATE/ser.sh --corpus_root "$CREMA_D" --class_map 6class --protocol speaker_kfold --kfold 5 --models "w2v2_mtl egemaps_svm" "$@"
