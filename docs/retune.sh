#!/usr/bin/env bash
# Re-tune every shape this repository ships winners for, after a template change: the four block
# matmuls of a GPT-2 small training step at B=4, T=1024 (attention projection first: its winners
# seed the other sizes' studies; then qkv, MLP up and down), the seed article's headline shape, the
# two small shapes of `bench`, C = OC = 48 at B=16, T=1024 (the sweep's narrowest layers, whose
# sizes sit too far from 4,64,48,48), the same four GPT-2 matmuls at llm.c's train_gpt2 defaults
# B=4, T=64 (256 rows: too far from B=4, T=1024 to borrow its choices), and the LM head (six trials: one call of it takes seconds, a
# trial about a minute). Winners go to tuned/ (or $AUTOTUNE_TUNED_DIR); existing studies resume,
# stale records of this machine seed their sizes' new studies; after each shape's two backward
# searches the whole backward is timed and decides what each half runs, then the step all three.
# Extra arguments go to every search, e.g. --storage sqlite:////tmp/fresh.sqlite3 for fresh studies.
# The GPT-2 searches take 60 trials: with 20, half of them seeds, studies on the Zen 4 kept configs
# that 60-trial studies then beat by 1.04-1.09x side by side (docs/results.md).
#     bash docs/retune.sh   # Zen 4: a GPT-2 size took 11-16 minutes for its backward at 60 trials and 5 for
#                           # its forward (2026-11-30), so about 100 minutes in all; a Zen 1, longer
# RETUNE_BUDGET=session takes a session's budget instead: 24 trials at the attention projection, 16
# at the other GPT-2 sizes, 12 at the rest, no LM head (it runs BLAS with beta where nothing near
# was tuned). On a Zen 5 (2026-12-02, 06:50-07:46 UTC) a trial took 6-10 s and the whole run 56 minutes;
# on an Intel Xeon with AVX-512 (2026-12-02, 11:02-11:47 UTC) 45 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${RETUNE_BUDGET:-full}" in
    session) first=24 gpt2=16 headline=12 small=12 lm_head=0 ;;
    full) first=60 gpt2=60 headline=24 small=16 lm_head=6 ;;
    *) echo "retune.sh: RETUNE_BUDGET is full or session, not '$RETUNE_BUDGET'" >&2; exit 2 ;;
esac
python -m autotune search --op all --shape 4,1024,768,768 --trials "$first" "$@"
for shape in 4,1024,768,2304 4,1024,768,3072 4,1024,3072,768; do
    python -m autotune search --op all --shape "$shape" --trials "$gpt2" "$@"
done
python -m autotune search --op all --shape 64,1024,768,768 --trials "$headline" "$@"
for shape in 4,64,48,48 8,128,192,192 16,1024,48,48; do
    python -m autotune search --op all --shape "$shape" --trials "$small" "$@"
done
python -m autotune search --op all --shape 4,64,768,768 --trials "$first" "$@"
for shape in 4,64,768,2304 4,64,768,3072 4,64,3072,768; do
    python -m autotune search --op all --shape "$shape" --trials "$small" "$@"
done
if [ "$lm_head" -gt 0 ]; then
    python -m autotune search --op all --shape 4,1024,768,50304 --trials "$lm_head" "$@"
fi
python -m autotune show
