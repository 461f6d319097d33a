#!/usr/bin/env bash
# The pretraining data pipeline on one core each, in one run, alternating:
# ijepa-rs reading an image folder, ijepa-rs reading the same images as tar
# shards (written once by `ijepa-cli shards`), and torchvision + PIL on the
# folder (skipped, and said so, where python3 has no torch/torchvision); then
# both on the folder with the official colour distortion and blur on.
#
#   bash bench/data.sh            # 512 JPEGs of 500x375 (ImageNet's typical size), 224² crops
#
# The images are written once to /tmp/ijepa-bench-jpegs by bench/make_jpegs.py,
# the shards (128 images each) to /tmp/ijepa-bench-shards.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ijepa-cli
bin=target/release/ijepa-cli
dir=/tmp/ijepa-bench-jpegs
shards=/tmp/ijepa-bench-shards
[ -d "$dir" ] || python3 bench/make_jpegs.py "$dir" 512
[ -d "$shards" ] || "$bin" shards --data "$dir" --out "$shards" --per-shard 128 2>/dev/null
pattern="$shards/shard-{000000..000003}.tar"
torch=1
python3 -c "import torch, torchvision, PIL" 2>/dev/null || torch=0
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
echo "data pipeline, 512 JPEG 500x375 -> RandomResizedCrop 224, one core each ($(date -u +%F), $(nproc) cores)"
[ "$torch" = 1 ] || echo "SKIPPED: torchvision + PIL (python3 has no torch/torchvision)"
for round in 1 2 3; do
  folder=$("$bin" bench data --data "$dir" --workers 1 --json | field images_per_second_per_worker)
  tars=$("$bin" bench data --data "$pattern" --workers 1 --json | field images_per_second_per_worker)
  theirs=0
  if [ "$torch" = 1 ]; then
    theirs=$(python3 bench/torch_data.py --data "$dir" 2>/dev/null | field images_per_second_per_worker)
  fi
  aug=$("$bin" bench data --data "$dir" --workers 1 --color-distortion --blur --json | field images_per_second_per_worker)
  theirs_aug=0
  if [ "$torch" = 1 ]; then
    theirs_aug=$(python3 bench/torch_data.py --data "$dir" --color-distortion --blur 2>/dev/null | field images_per_second_per_worker)
  fi
  awk -v r="$round" -v a="$folder" -v s="$tars" -v b="$theirs" -v c="$aug" -v d="$theirs_aug" 'BEGIN {
    printf "round %d: ijepa-rs folder %.1f img/s/core, tar shards %.1f img/s/core (%.2fx the folder)", r, a, s, s / a
    if (b > 0) printf ", torchvision+PIL %.1f img/s/core (folder %.2fx, shards %.2fx)", b, a / b, s / b
    printf "; colour distortion + blur: ijepa-rs %.1f img/s/core", c
    if (d > 0) printf ", torchvision+PIL %.1f (%.2fx)", d, c / d
    printf "\n" }'
done
