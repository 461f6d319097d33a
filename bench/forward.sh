#!/usr/bin/env bash
# Encoder forward throughput, ijepa-rs vs timm eager, in one run on this machine.
#
#   bash bench/forward.sh [MODEL] [BATCH]
#
# Runs each side three times, alternating, and reports every run (the machine is noisy).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-vit_small_patch16_224}
batch=${2:-8}
cargo build --release -q -p ijepa-cli
rate() { sed -n 's/.*"images_per_second": *\([0-9.]*\).*/\1/p'; }
echo "forward throughput, $model, batch $batch ($(date -u +%F), $(nproc) cores)"
for round in 1 2 3; do
  ours=$(target/release/ijepa-cli bench forward --model "$model" --batch "$batch" --iters 20 --json | rate)
  theirs=$(python3 bench/timm_forward.py --model "$model" --batch "$batch" --iters 20 2>/dev/null | rate)
  awk -v r="$round" -v a="$ours" -v b="$theirs" \
    'BEGIN { printf "round %d: ijepa-rs %.2f img/s, timm %.2f img/s, ratio %.2fx\n", r, a, b, a / b }'
done
