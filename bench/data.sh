#!/usr/bin/env bash
# The pretraining data pipeline, ijepa-rs vs torchvision + PIL, one core each, in one run.
#
#   bash bench/data.sh            # 512 JPEGs of 500x375 (ImageNet's typical size), 224² crops
#
# The images are written once to /tmp/ijepa-bench-jpegs by bench/make_jpegs.py.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ijepa-cli
dir=/tmp/ijepa-bench-jpegs
[ -d "$dir" ] || python3 bench/make_jpegs.py "$dir" 512
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
echo "data pipeline, 512 JPEG 500x375 -> RandomResizedCrop 224, one core each ($(date -u +%F), $(nproc) cores)"
for round in 1 2; do
  ours=$(target/release/ijepa-cli bench data --data "$dir" --workers 1 --json)
  theirs=$(python3 bench/torch_data.py --data "$dir" 2>/dev/null)
  awk -v r="$round" -v a="$(echo "$ours" | field images_per_second_per_worker)" -v b="$(echo "$theirs" | field images_per_second_per_worker)" \
    'BEGIN { printf "round %d: ijepa-rs %.1f img/s/core, torchvision+PIL %.1f img/s/core, ratio %.2fx\n", r, a, b, a / b }'
done
