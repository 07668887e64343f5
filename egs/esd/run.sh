#!/usr/bin/env bash
# ESD English half (speakers 0011-0020, 5 emotions), W2V2-MTL, the release's train/evaluation/test split (speaker-dependent).
# Class map 5class, protocol predefined. Stages and options: ../TEMPLATE/ser.sh --help.
#   ESD=/data/esd ./run.sh                               # everything
#   ./run.sh --stage 2 --stop_stage 2 --protocol random_kfold      # folds of another protocol
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
exec ../TEMPLATE/ser.sh --corpus_root "$ESD" --class_map 5class --protocol predefined "$@"
