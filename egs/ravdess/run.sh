#!/usr/bin/env bash
# RAVDESS speech (24 actors, 8 emotions), W2V2-MTL, leave-one-speaker-out.
# Class map 8class, protocol loso_speaker. Stages and options: ../TEMPLATE/ser.sh --help.
#   RAVDESS=/data/ravdess ./run.sh                               # everything
#   ./run.sh --stage 2 --stop_stage 2 --protocol random_kfold      # folds of another protocol
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
exec ../TEMPLATE/ser.sh --corpus_root "$RAVDESS" --class_map 8class --protocol loso_speaker "$@"
