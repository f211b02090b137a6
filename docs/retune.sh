#!/usr/bin/env bash
# Re-tune every shape this repository ships winners for, after a template change: the seed
# article's headline shape, one GPT-2 small training step at B=4, T=1024 (its four block matmuls
# and the LM head), and the two small shapes of `bench`. Winners go to tuned/ (or
# $AUTOTUNE_TUNED_DIR); stale records of this machine seed their sizes' new studies.
#     bash docs/retune.sh            # about two hours on 2 cores of an AMD Zen 1
set -euo pipefail
cd "$(dirname "$0")/.."
python -m autotune search --op all --shape 64,1024,768,768 --trials 24
python -m autotune search --model gpt2 --batch 4 --seq 1024 --trials 16
for shape in 4,64,48,48 8,128,192,192; do
    python -m autotune search --op all --shape "$shape" --trials 16
done
python -m autotune show
