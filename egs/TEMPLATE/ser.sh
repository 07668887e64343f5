#!/usr/bin/env bash
# The numbered stages every serkit emotion recipe shares. A recipe's run.sh sets its corpus-specific
# defaults and calls this script; only local/data.sh (stage 0) differs between corpora.
#
#   0 data preparation      local/data.sh -> data/all (Kaldi-style), validated
#   1 emotion-phonemes      G2P -> six phone classes -> emotion-suffixed tokens, data/lang/tokens.txt
#   2 folds                 data/folds/<protocol>/foldN/{train,valid,test}, protocol.json, leakage.txt
#   3 training              one job a fold through $train_cmd; resumes from checkpoints
#   4 scoring               WA/UA/F1/PER per fold, mean +- std, pooled -> RESULTS.md (+ plots)
#   5 export + inference    exp/<tag>/export, then serkit-infer on a few test utterances
set -euo pipefail
cmdline="$(basename "$PWD")/run.sh $*"

help_message="Usage: $0 [options]
  --stage N            first stage to run (default 0)
  --stop_stage N       last stage to run (default 5)
  --class_map NAME     emotion class map shipped for the corpus (prepare_corpus --list) or path/to/map.yaml
  --protocol NAME      fold protocol for training: loso | loso_session | random (IEMOCAP) | loso_speaker |
                       speaker_kfold | predefined | random_kfold (speaker-dependent) | sentence_kfold
  --kfold K            folds of the k-fold protocols (default 5)
  --folds LIST         folds to train/score, e.g. \"1 2\" (default: all folds of the protocol)
  --train_config FILE  HyperPyYAML training config
  --train_overrides F  recipe override file applied on top of the config
  --lambdas \"L ...\"    phoneme-loss weights; several values run the lambda ablation
  --seed N             random seed (part of the experiment name)
  --nj N               parallel fold jobs for the local backend
  --threads N          CPU threads per training job (default: cores / nj)
  --export_fold F      fold to export in stage 5: best (by validation UA) or a number, e.g. 3
  --export_lambda L    which of --lambdas to export in stage 5 (default: the first)
  --corpus_root DIR    the corpus (run.sh passes db.sh's value)
  --data DIR           data directory (default data/all); --lang DIR token inventory (data/lang)"

stage=0
stop_stage=5
class_map=4class
protocol=loso
kfold=5
folds=
train_config=../../conf/w2v2_mtl.yaml
train_overrides=conf/train.yaml
lambdas=0.1
seed=1
nj=2
threads=        # CPU threads per training job (default: cores / nj)
export_fold=best
export_lambda=
corpus_root=
data=data/all
lang=data/lang
. ../TEMPLATE/utils/parse_options.sh
if [ $# -gt 0 ]; then echo "$0: unexpected argument '$1' (options are --name value; see --help)" >&2; exit 2; fi
. ./path.sh
. ./cmd.sh

[ -n "$threads" ] || threads=$(( $(nproc) / nj > 0 ? $(nproc) / nj : 1 ))

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') $*"; }
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

exp_tag() {  # experiment name = config + overrides + class map + lambda + seed (self-describing)
  echo "$(basename "$train_config" .yaml)_$(basename "$train_overrides" .yaml)_$(basename "$class_map" .yaml)_lambda${1}_seed${seed}"
}
fold_ids() {  # fold numbers of the protocol, or the user's --folds
  if [ -n "$folds" ]; then echo "$folds"; return; fi
  ls -d "data/folds/$protocol"/fold[0-9]* | sed 's/.*fold0*//' | sort -n | tr '\n' ' '
}

if stage_on 0; then
  log "Stage 0: data preparation"
  local/data.sh --corpus_root "$corpus_root" --class_map "$class_map" --out "$data"
  python -m serkit.bin.validate_data_dir "$data" --complete
fi

if stage_on 1; then
  log "Stage 1: emotion-phoneme labels"
  python -m serkit.bin.make_emophones --data "$data" --lang "$lang"
fi

if stage_on 2; then
  log "Stage 2: folds"
  python -m serkit.bin.make_folds --data "$data" --out data/folds --seed "$seed" --protocols "default,$protocol" \
    --k "$kfold"
fi

if stage_on 3; then
  for lam in $lambdas; do
    exp=exp/$(exp_tag "$lam")/$protocol
    log "Stage 3: training $exp (folds: $(fold_ids))"
    # shellcheck disable=SC2154  # train_cmd comes from cmd.sh
    $train_cmd --max-jobs "$nj" --num-threads "$threads" --pad 2 JOB="$(fold_ids | tr -s ' ' ',' | sed 's/,$//')" \
      "$exp/log/train.foldJOB.log" \
      python -m serkit.bin.train "$train_config" --overrides "$train_overrides" \
        --data_dir "$data" --lang_dir "$lang" --fold_dir "data/folds/$protocol/foldJOB" \
        --output_folder "$exp/foldJOB" --mtl_lambda "$lam" --seed "$seed"
  done
fi

if stage_on 4; then
  exps=()
  for lam in $lambdas; do
    exp=exp/$(exp_tag "$lam")/$protocol
    exps+=("$exp")
    log "Stage 4: scoring $exp"
    python -m serkit.bin.score --exp "$exp" --results RESULTS.md \
      --config "$train_config" --overrides "$train_overrides" --folds "data/folds/$protocol" --command "$cmdline" \
      ${folds:+--allow-partial}
  done
  if [ ${#exps[@]} -gt 1 ]; then
    log "Stage 4: lambda comparison"
    python -m serkit.bin.compare --results RESULTS.md --title "lambda ablation ($protocol)" "${exps[@]}"
  fi
fi

if stage_on 5; then
  lam=${export_lambda:-${lambdas%% *}}
  exp=exp/$(exp_tag "$lam")
  log "Stage 5: export and inference"
  if [[ $export_fold =~ ^[0-9]+$ ]]; then export_fold=$(printf 'fold%02d' "$export_fold"); fi
  python -m serkit.bin.export_model --exp "$exp/$protocol" --fold "$export_fold" --out "$exp/export"
  log "Exported model: $(pwd)/$exp/export"
  head -n 3 "$data/wav.scp" > "$exp/export_demo.scp"  # a demo of serkit-infer, not an evaluation
  serkit-infer "$exp/export" --scp "$exp/export_demo.scp" --phonemes
fi
log "Done (stages $stage-$stop_stage)"
