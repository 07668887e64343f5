#!/usr/bin/env bash
# The numbered stages every serkit emotion recipe shares. A recipe's run.sh sets its corpus-specific
# defaults and calls this script; only local/data.sh (stage 0) differs between corpora. No stage
# names a model family: serkit.bin.plan_experiments turns --model(s)/--lambdas into experiments.
#
#   0 data preparation      local/data.sh -> data/all (Kaldi-style), validated
#   1 targets               what the experiments' targets need (serkit.bin.make_targets), e.g. a CTC head's tokens
#   2 folds                 data/folds/<protocol>/foldN/{train,valid,test}, protocol.json, leakage.txt
#   3 training              per experiment, one job a fold through $train_cmd; resumes from checkpoints
#   4 scoring               WA/UA/F1(/PER) per fold, mean +- std, pooled with speaker-bootstrap 95 % CIs
#                           -> RESULTS.md (+ plots); several experiments end in one comparison table
#                           (seeds merged, each row's paired test against the floor)
#   5 export + inference    exp/<tag>/export per experiment, then serkit-infer on a few utterances
set -euo pipefail
# The command as RESULTS.md and provenance.json record it: no path of this machine (utils/recipe_command.sh).
. ../TEMPLATE/utils/recipe_command.sh
# run.sh records its user's words (record_recipe_command); ser.sh run by hand records its own.
[ -n "${SERKIT_RECIPE_COMMAND:-}" ] || record_recipe_command "$@"
cmdline=$SERKIT_RECIPE_COMMAND  # each fold's provenance.json records it too (serkit.training.provenance)

help_message="Usage: $0 [options]
  --stage N            first stage to run (default 0)
  --stop_stage N       last stage to run (default 5)
  --class_map NAME     emotion class map shipped for the corpus (prepare_corpus --list) or path/to/map.yaml
  --protocol NAME      fold protocol for training: loso | loso_session | random (IEMOCAP) | loso_speaker |
                       speaker_kfold | predefined | random_kfold (speaker-dependent) | sentence_kfold
  --kfold K            folds of the k-fold protocols (default 5)
  --folds LIST         folds to train/score, e.g. \"1 2\" (default: all folds of the protocol)
  --model NAME         one model family (conf/NAME.yaml): w2v2_mtl | tim_net | sta_crnn | egemaps_svm ...
  --models \"A B ...\"   several families on the same folds, ending in one comparison table
                       (default: the recipe's, e.g. \"w2v2_mtl egemaps_svm\" = the model and the floor)
  --train_overrides F  one override file for every family (default: the recipe's conf/<family>.yaml)
  --encoders \"E ...\"   SSL encoders (hub ids or local folders: wav2vec 2.0, HuBERT, WavLM, data2vec-audio,
                       Whisper) for the families that have one (w2v2_mtl, ssl_probe): one experiment each on
                       the same folds, named by the encoder's short name, ending in one comparison table
                       (default: each config's encoder_source)
  --lambdas \"L ...\"    CTC-head weights (mtl_lambda) for families that have one; several values run
                       the lambda ablation (default: each family's config)
  --grid \"O=V,V ...\"   every combination of these values of a family's own options runs as one experiment,
                       named by them: an ablation from one command, e.g. the multi-level model's eight rows
                       --grid \"gender_prior=False,True level_weight=0,0.3 centre_weight=0,0.01\"
  --seed N             random seed (part of the experiment name; also the folds' seed)
  --seeds \"N ...\"      train every experiment once per seed (..._seed1, ..._seed2, ...; folds keep --seed's);
                       stage 4 shows mean +- std over seeds and scores the seeds' ensemble
  --nj N               parallel fold jobs for the local backend
  --threads N          CPU threads per training job (default: cores / nj)
  --ngpu N             GPUs per fold (train_cmd's --gpu N); N > 1 trains each fold with N processes
                       (torchrun, DDP), batch_size staying the global batch (default: as cmd.sh says)
  --export_fold F      fold to export in stage 5: best (by validation UA) or a number, e.g. 3
  --corpus_root DIR    the corpus (run.sh passes db.sh's value)
  --strict, --no-strict  stage 0: always / never check the counts against the full release's (default:
                       check when the copy looks like a full release)
  --data DIR           data directory (default data/all); --lang DIR token inventory (data/lang;
                       character / BPE targets use data/lang_char, data/lang_bpe)
  --ctc_targets \"K ...\" CTC head targets for models that train one: emophone (Li et al. 2024), char or
                       bpe (Cai et al. 2021's character CTC); several run one experiment each
  --bpe_units N        BPE vocabulary size for models with ctc_targets: bpe (default 128)
  --tensorboard        stage 3: also write live training curves for TensorBoard (exp/<tag>/<protocol>/foldNN/tensorboard;
                       needs the optional tensorboard package: the option says how to install it)
  --precision P        train networks in fp32 | bf16 | fp16 (GPU) | auto (bf16 where the device has bf16
                       units), named in the experiment (default: each config's, auto for W2V2-MTL)"

stage=0
stop_stage=5
class_map=4class
protocol=loso
kfold=5
folds=
model=
models=w2v2_mtl  # a recipe's run.sh may set its own default (e.g. a model and the eGeMAPS floor)
train_overrides=
encoders=       # SSL encoders to compare, e.g. "facebook/wav2vec2-base microsoft/wavlm-base-plus"
lambdas=
grid=
seed=1
seeds=          # several training seeds, e.g. "1 2 3" (default: --seed)
nj=2
threads=        # CPU threads per training job (default: cores / nj)
ngpu=           # GPUs per fold (default: train_cmd's own --gpu, if any)
export_fold=best
corpus_root=
strict=         # stage 0's count check: true | false (--strict / --no-strict); empty: when the copy looks full
tensorboard=false
switches="strict tensorboard"  # options that take no value (parse_options.sh)
data=data/all
lang=data/lang
bpe_units=128
ctc_targets=
precision=
. ../TEMPLATE/utils/parse_options.sh
if [ $# -gt 0 ]; then echo "$0: unexpected argument '$1' (options are --name value; see --help)" >&2; exit 2; fi
if [[ ! $ngpu =~ ^[0-9]*$ ]]; then echo "$0: --ngpu takes a number of GPUs per fold, got '$ngpu'" >&2; exit 2; fi
for _v in stage stop_stage; do  # a stage outside 0-5 would run nothing and exit 0
  if [[ ! ${!_v} =~ ^[0-5]$ ]]; then echo "$0: --$_v takes a stage number 0-5, got '${!_v}'" >&2; exit 2; fi
done
if [ "$stage" -gt "$stop_stage" ]; then echo "$0: --stage $stage is after --stop_stage $stop_stage: no stage would run" >&2; exit 2; fi
. ./path.sh
. ./cmd.sh

[ -n "$threads" ] || threads=$(( $(nproc) / nj > 0 ? $(nproc) / nj : 1 ))

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') $*"; }
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

[ -z "$model" ] || models=$model  # --model NAME: just that family (run.sh never passes --model)
with_plan() {  # run serkit.bin.$1 with the options that plan the experiments
  python -m "serkit.bin.$1" --models "$models" --lambdas "$lambdas" --class_map "$class_map" \
    --seed "$seed" ${seeds:+--seeds "$seeds"} --conf_dir ../../conf --recipe_conf_dir conf --ctc_targets "$ctc_targets" \
    ${train_overrides:+--overrides "$train_overrides"} ${grid:+--grid "$grid"} ${precision:+--precision "$precision"} \
    ${encoders:+--encoders "$encoders"} --lang "$lang" "${@:2}"
}
plan() { with_plan plan_experiments; }  # the experiments: tag family config overrides lang-dir args... (tab-separated)
plan > /dev/null  # an unknown model or a bad lambda stops here, before any stage runs
fold_ids() {  # fold numbers of the protocol, or the user's --folds
  if [ -n "$folds" ]; then echo "$folds"; return; fi
  ls -d "data/folds/$protocol"/fold[0-9]* | sed 's/.*fold0*//' | sort -n | tr '\n' ' '
}

if stage_on 0; then
  log "Stage 0: data preparation"
  local/data.sh --corpus_root "$corpus_root" --class_map "$class_map" --out "$data" ${strict:+"--strict=$strict"}
  python -m serkit.bin.validate_data_dir "$data" --complete
fi

if stage_on 1; then  # what the experiments' targets need, logged per target (or why it is skipped)
  with_plan make_targets --data "$data" --bpe_units "$bpe_units"
fi

if stage_on 2; then
  log "Stage 2: folds"
  python -m serkit.bin.make_folds --data "$data" --out data/folds --seed "$seed" --protocols "default,$protocol" \
    --k "$kfold"
fi

if stage_on 3; then
  [ "$tensorboard" != true ] || python -m serkit.training.tensorboard  # stops here, with the install command, when absent
  while IFS=$'\t' read -r tag family config overrides lang_dir args; do
    exp=exp/$tag/$protocol
    log "Stage 3: training $exp (folds: $(fold_ids))"
    opts=()
    [ "$overrides" = - ] || opts+=(--overrides "$overrides")
    [ "$lang_dir" = - ] || opts+=(--lang_dir "$lang_dir")
    # --ngpu N: N GPUs per job, and N training processes (serkit.bin.train restarts itself under torchrun).
    [ -z "$ngpu" ] || opts+=(--nproc "$(( ngpu > 1 ? ngpu : 1 ))")
    # The training seed is the tag's (..._seed<N>: --seed, or each of --seeds).
    [ "$tensorboard" != true ] || opts+=(--tensorboard)
    # shellcheck disable=SC2086,SC2154  # $args are option words; train_cmd comes from cmd.sh
    # Folds with train.done are not started again (on a cluster they would wait in the queue for nothing).
    # --lock: a fold another run is training is refused before its log is touched (serkit.jobs.lock).
    $train_cmd --max-jobs "$nj" --num-threads "$threads" ${ngpu:+--gpu "$ngpu"} --pad 2 \
      --skip-if-exists "$exp/foldJOB/train.done" --lock "$exp/foldJOB" \
      JOB="$(fold_ids | tr -s ' ' ',' | sed 's/,$//')" "$exp/log/train.foldJOB.log" \
      python -m serkit.bin.train "$config" "${opts[@]}" --data_dir "$data" \
        --fold_dir "data/folds/$protocol/foldJOB" --output_folder "$exp/foldJOB" --seed "${tag##*_seed}" $args
  done < <(plan)
fi

if stage_on 4; then
  exps=()
  declare -A trained_with=()  # an experiment's config and overrides, keyed by its tag less _seed<N>
  while IFS=$'\t' read -r tag family config overrides lang_dir args; do
    exp=exp/$tag/$protocol
    exps+=("$exp")
    trained_with[${tag%_seed*}]="$config"$'\t'"$overrides"
    log "Stage 4: scoring $exp"
    opts=()
    [ "$overrides" = - ] || opts+=(--overrides "$overrides")
    python -m serkit.bin.score --exp "$exp" --results RESULTS.md --config "$config" "${opts[@]}" \
      --folds "data/folds/$protocol" --data "$data" --command "$cmdline" ${folds:+--allow-partial}
  done < <(plan)
  ensembles=$(python -m serkit.bin.ensemble "${exps[@]}")  # several --seeds: exp/<tag>_ens_seed1-2-3/<protocol>
  for ens in $ensembles; do  # each experiment's seed ensemble (mean posterior) is one more row
    log "Stage 4: scoring the seed ensemble $ens"
    ens_tag=${ens#exp/}
    IFS=$'\t' read -r config overrides <<< "${trained_with[${ens_tag%%_ens_seed*}]}"  # its seeds' config
    opts=()
    [ "$overrides" = - ] || opts+=(--overrides "$overrides")
    python -m serkit.bin.score --exp "$ens" --results RESULTS.md --config "$config" "${opts[@]}" \
      --folds "data/folds/$protocol" --data "$data" --command "$cmdline" ${folds:+--allow-partial}
    exps+=("$ens")
  done
  if [ ${#exps[@]} -gt 1 ]; then
    log "Stage 4: comparison of ${#exps[@]} experiments"
    variant=${train_overrides:+$(basename "$train_overrides" .yaml)}  # another variant's table is another section
    python -m serkit.bin.compare --results RESULTS.md --title "$models${variant:+, $variant}${encoders:+, encoders $encoders}${lambdas:+, lambdas $lambdas}${grid:+, grid $grid}${seeds:+, seeds $seeds} ($protocol)" "${exps[@]}"
  fi
fi

if stage_on 5; then
  if [[ $export_fold =~ ^[0-9]+$ ]]; then export_fold=$(printf 'fold%02d' "$export_fold"); fi
  head -n 3 "$data/wav.scp" > "exp/export_demo.scp"  # a demo of serkit-infer, not an evaluation
  while IFS=$'\t' read -r tag family config overrides lang_dir args; do
    log "Stage 5: export and inference ($tag)"
    python -m serkit.bin.export_model --exp "exp/$tag/$protocol" --fold "$export_fold" --out "exp/$tag/export"
    log "Exported model: $(pwd)/exp/$tag/export"
    # --utt2spk: models trained with per-speaker normalisation normalise each speaker with its files' statistics
    serkit-infer "exp/$tag/export" --scp exp/export_demo.scp --utt2spk "$data/utt2spk" $([ "$lang_dir" = - ] || echo --phonemes)
  done < <(plan)
fi
log "Done (stages $stage-$stop_stage)"
