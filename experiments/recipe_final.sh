#!/usr/bin/env bash
# The final representation recipe of issue 9, end to end: the deduplicated corpus, one pretraining
# of a mini model (4 x 256) for a 60-minute budget on the machine it runs on, then SST-2 (dev and
# the labelled test file) and EWT POS (test) from it, and POS from `scratch` (same shape and
# vocabulary), three seeds each. Results: experiments/results/recipe/results.jsonl.
#
#   RECIPE_WORK=../recipe-work experiments/recipe_final.sh
#
# FLAGS, SST2_FT and POS_FT override the settings below (the screening's choices: see the README's
# recipe table). Every step resumes where it stopped when the script is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export RECIPE_WORK=${RECIPE_WORK:-$(cd .. && pwd)/recipe-work}
DATA=${SELFSUP_DATA:-$(cd .. && pwd)/shared/data}
NAME=${NAME:-final}
MINUTES=${MINUTES:-60}
FLAGS=${FLAGS:-"--preset mini --objective mlm --max-len 64 --mask-prob 0.4"}
SST2_FT=${SST2_FT:-"--epochs 2 --lr 2e-4 --batch-size 64 --precision bf16"}
POS_FT=${POS_FT:-"--epochs 3 --lr 2e-4 --batch-size 32 --precision bf16"}
mkdir -p "$RECIPE_WORK"
[ -f "$RECIPE_WORK/corpus.jsonl.gz" ] ||
  python experiments/recipe_corpus.py "$DATA" "$RECIPE_WORK/corpus.jsonl.gz"
python experiments/recipe.py pretrain "$NAME" --minutes "$MINUTES" -- $FLAGS
python experiments/recipe.py sst2 "$NAME" --seeds 0 1 2 -- $SST2_FT
python experiments/recipe.py pos "$NAME" --seeds 0 1 2 -- $POS_FT
python experiments/recipe.py pos scratch --seeds 0 1 2 -- $POS_FT --preset mini \
  --tokenizer "$RECIPE_WORK/runs/$NAME"
python experiments/recipe.py table -- $SST2_FT
