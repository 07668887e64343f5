#!/usr/bin/env bash
# ESD English half (speakers 0011-0020, 5 emotions), W2V2-MTL and the eGeMAPS floor, the release's train/evaluation/test split (speaker-dependent).
# Class map 5class, protocol predefined. Stages and options: ../TEMPLATE/ser.sh --help.
#   ESD=/data/esd ./run.sh                               # everything
#   ./run.sh --stage 2 --stop_stage 2 --protocol random_kfold      # folds of another protocol
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
. ../TEMPLATE/utils/recipe_command.sh && record_recipe_command "$@"  # RESULTS.md: the user's words
exec ../TEMPLATE/ser.sh --corpus_root "$ESD" --class_map 5class --protocol predefined --models "w2v2_mtl egemaps_svm" "$@"
