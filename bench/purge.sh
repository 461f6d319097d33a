#!/usr/bin/env bash
# What keeping freed memory (ijepa-cli's allocator policy, main.rs: keep_freed_memory) is worth:
# the whole training step (ViT-Ti/16 gap, 224², batch 8, predictor 384x6) as ijepa-cli runs it
# now, as it ran before (MIMALLOC_PURGE_DELAY=1000, mimalloc's default: freed memory back to the
# OS after 1 s), and our PyTorch reference (bench/torch_step.py --train), alternating, ROUNDS (5) rounds;
# img/s and peak RSS of each, medians.
#
#   bash bench/purge.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ijepa-cli
bin=target/release/ijepa-cli
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
args=(bench train --model vit_tiny_patch16_224 --batch 8 --json)
echo "I-JEPA training step, ViT-Ti/16 224² b8, predictor 384x6 ($(date -u +%F), $(nproc) cores)"
kept=(); purged=(); torch=(); kept_mb=(); purged_mb=(); torch_mb=()
for round in $(seq "${ROUNDS:-5}"); do
  a=$("$bin" "${args[@]}"); b=$(MIMALLOC_PURGE_DELAY=1000 "$bin" "${args[@]}")
  c=$(python3 bench/torch_step.py --train 2>/dev/null)
  kept+=("$(echo "$a" | field images_per_second)"); kept_mb+=("$(echo "$a" | field peak_rss_mb)")
  purged+=("$(echo "$b" | field images_per_second)"); purged_mb+=("$(echo "$b" | field peak_rss_mb)")
  torch+=("$(echo "$c" | field images_per_second)"); torch_mb+=("$(echo "$c" | field peak_rss_mb)")
  echo "round $round: kept ${kept[-1]} img/s (${kept_mb[-1]} MiB), purged ${purged[-1]} img/s (${purged_mb[-1]} MiB), PyTorch ${torch[-1]} img/s (${torch_mb[-1]} MiB)"
done
m() { printf '%s\n' "$@" | median; }
k=$(m "${kept[@]}"); p=$(m "${purged[@]}"); t=$(m "${torch[@]}")
awk -v k="$k" -v p="$p" -v t="$t" -v km="$(m "${kept_mb[@]}")" -v pm="$(m "${purged_mb[@]}")" -v tm="$(m "${torch_mb[@]}")" \
  'BEGIN { printf "median: kept %.2f img/s (%.0f MiB), purged %.2f img/s (%.0f MiB), PyTorch %.2f img/s (%.0f MiB); kept/purged %.2fx, kept/PyTorch %.2fx\n", k, km, p, pm, t, tm, k / p, k / t }'
