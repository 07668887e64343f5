#!/usr/bin/env bash
# MSP-Podcast (8 primary emotions; O and X excluded), W2V2-MTL and the eGeMAPS floor, the release's Train/Development/Test sets.
# Class map 8class, protocol predefined. Stages and options: ../TEMPLATE/ser.sh --help.
#   MSP_PODCAST=/data/msp_podcast ./run.sh                               # everything
#   ./run.sh --stage 2 --stop_stage 2 --protocol random_kfold      # folds of another protocol
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
. ../TEMPLATE/utils/recipe_command.sh && record_recipe_command "$@"  # RESULTS.md: the user's words
exec ../TEMPLATE/ser.sh --corpus_root "$MSP_PODCAST" --class_map 8class --protocol predefined --models "w2v2_mtl egemaps_svm" "$@"
