#!/usr/bin/env bash
# One whole I-JEPA training step (forward, backward, AdamW, EMA), ijepa-rs vs
# our PyTorch reference (torch.optim.AdamW, the official EMA update), in one run.
#
#   bash bench/train.sh            # ViT-Ti/16, 224², batch 8, predictor 384x6
#
# Each side runs in its own process (so peak memory is its own), twice, alternating.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ijepa-cli
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
echo "I-JEPA training step (fwd+bwd+AdamW+EMA), ViT-Ti/16 224² b8, predictor 384x6 ($(date -u +%F), $(nproc) cores)"
for round in 1 2; do
  ours=$(target/release/ijepa-cli bench train --model vit_tiny_patch16_gap_224 --batch 8 --json)
  theirs=$(python3 bench/torch_step.py --train 2>/dev/null)
  awk -v r="$round" -v a="$(echo "$ours" | field images_per_second)" -v b="$(echo "$theirs" | field images_per_second)" \
      -v ma="$(echo "$ours" | field peak_rss_mb)" -v mb="$(echo "$theirs" | field peak_rss_mb)" \
    'BEGIN { printf "round %d: ijepa-rs %.2f img/s (peak %.0f MiB), PyTorch %.2f img/s (peak %.0f MiB), ratio %.2fx\n", r, a, ma, b, mb, a / b }'
done
