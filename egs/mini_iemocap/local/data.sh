#!/usr/bin/env bash
# Stage 0 for the mini recipe: generate the synthetic IEMOCAP (a no-op when it exists) and the tiny
# offline "pretrained" wav2vec 2.0 (and one tiny encoder of each other type, for --encoders: see
# run.sh), then run the real IEMOCAP preparation on it.
set -euo pipefail
corpus_root=; class_map=4class; out=data/all; strict=; switches=strict  # --strict / --no-strict
. ../TEMPLATE/utils/parse_options.sh
python -m serkit.bin.make_mini_iemocap --out "$(dirname "$corpus_root")"
python -m serkit.bin.make_tiny_w2v2 --out db/tiny_w2v2
for type in hubert wavlm data2vec-audio whisper; do  # db/tiny_hubert db/tiny_wavlm db/tiny_data2vec db/tiny_whisper
  python -m serkit.bin.make_tiny_w2v2 --out "db/tiny_${type%-audio}" --type "$type"
done
python -m serkit.bin.prepare_iemocap --root "$corpus_root" --out "$out" --class-map "$class_map" \
  ${strict:+"--strict=$strict"}
