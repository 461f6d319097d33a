#!/usr/bin/env bash
# The probes' memory as the feature set grows: `ijepa-cli bench probe` writes a synthetic feature
# set (noisy class centres, 128 values per row, 100 classes) of 100,000 and of 1,000,000 training
# rows, then runs the k-NN probe (k = 20, 1,000 test rows) and the linear probe (100 AdamW steps
# of 4,096 rows) reading the file a chunk at a time (`probe --features`), and the same probes
# with the rows loaded into memory whole (`probe` without --features), alternating, 2 rounds.
# Prints one line per run: peak RSS and times.
#
#   bash bench/probe.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ijepa-cli
bin=target/release/ijepa-cli
echo "bench probe ($(date -u +%F), $(nproc) cores)"
for round in 1 2; do
  for rows in 100000 1000000; do
    for mode in file in-memory; do
      flag=(); [ "$mode" = in-memory ] && flag=(--in-memory)
      printf 'round %d, %-9s ' "$round" "$mode"
      "$bin" bench probe --rows "$rows" "${flag[@]}"
    done
  done
done
