#!/usr/bin/env bash
# One I-JEPA step, ijepa-rs vs our PyTorch reference, in one run.
#
#   bash bench/step.sh            # forward + backward: ViT-Ti/16 (gap), 224², batch 8, predictor 384×6
#   bash bench/step.sh train      # the whole step: + AdamW + EMA (what bench/train.sh runs)
#
# Each side runs in its own process (so peak memory is its own), twice, alternating.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ijepa-cli
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
if [ "${1:-step}" = train ]; then
  what="training step (fwd+bwd+AdamW+EMA)"; ours_cmd=(bench train); theirs_args=(--train)
else
  what="step (fwd+bwd)"; ours_cmd=(bench step); theirs_args=()
fi
echo "I-JEPA $what, ViT-Ti/16 224² b8, predictor 384x6 ($(date -u +%F), $(nproc) cores)"
for round in 1 2; do
  ours=$(target/release/ijepa-cli "${ours_cmd[@]}" --model vit_tiny_patch16_224 --batch 8 --json)
  theirs=$(python3 bench/torch_step.py "${theirs_args[@]}" 2>/dev/null)
  awk -v r="$round" -v a="$(echo "$ours" | field images_per_second)" -v b="$(echo "$theirs" | field images_per_second)" \
      -v ma="$(echo "$ours" | field peak_rss_mb)" -v mb="$(echo "$theirs" | field peak_rss_mb)" \
    'BEGIN { printf "round %d: ijepa-rs %.2f img/s (peak %.0f MiB), PyTorch %.2f img/s (peak %.0f MiB), ratio %.2fx\n", r, a, ma, b, mb, a / b }'
done
