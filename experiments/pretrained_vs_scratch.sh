#!/usr/bin/env bash
# The experiment at the centre of issue 3: the same fine-tuning from a model pretrained by
# `selfsup pretrain` and from `scratch` (same architecture and tokenizer, random weights), three
# seeds each, on SST-2 and on EWT POS; then the GLUE table of the pretrained model.
#
#   experiments/pretrained_vs_scratch.sh RUN DATA_DIR OUT_DIR
#   RUN: a `selfsup pretrain` run folder; DATA_DIR: ../shared/data
#   Set PARALLEL=1 to run the three jobs side by side (on a GPU they are bound by Python, not
#   by the card). EXTRA="--train-limit 64 --epochs 0.1" for a smoke run.
set -euo pipefail
RUN=$1 D=$2 O=$3
SELFSUP=${SELFSUP:-selfsup}
EXTRA=${EXTRA:-}
PARALLEL=${PARALLEL:-0}
mkdir -p "$O"
jobs_=(
  "$SELFSUP compare --init $RUN --init scratch --tokenizer $RUN --task sst2 --data $D/glue/SST-2 --epochs 2 --batch-size 64 --lr 2e-4 --seeds 0 1 2 --out $O/compare-sst2 $EXTRA"
  "$SELFSUP compare --init $RUN --init scratch --tokenizer $RUN --task pos --data $D/ud-english-ewt --epochs 3 --batch-size 32 --lr 2e-4 --seeds 0 1 2 --out $O/compare-pos $EXTRA"
  "$SELFSUP glue --init $RUN --data $D/glue --epochs 3 --batch-size 64 --lr 2e-4 --seeds 0 1 2 --out $O/glue $EXTRA"
)
names=(compare-sst2 compare-pos glue)
for i in 0 1 2; do
  echo "+ ${jobs_[$i]}" >&2
  if [ "$PARALLEL" = 1 ]; then
    ${jobs_[$i]} > "$O/${names[$i]}.log" 2>&1 &
  else
    ${jobs_[$i]} 2>&1 | tee "$O/${names[$i]}.log"
  fi
done
wait
for n in "${names[@]}"; do echo "== $n"; tail -n 12 "$O/$n.log"; done
