#!/usr/bin/env bash
# The matrix products of a ViT-Ti/16 training step (224², batch 8: 1568 tokens of 192; MLP 768;
# qkv 576), forward and both backward products, in candle's CPU GEMM (the gemm crate, through
# `ijepa-cli bench matmul`) and PyTorch's, alternating, ROUNDS (3) rounds; GFLOP/s medians.
#
#   bash bench/gemm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ijepa-cli
PYTHON=${PYTHON:-python3}
field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "f32 GEMM GFLOP/s, ijepa-rs (candle 0.11.1 / gemm) vs PyTorch $("$PYTHON" -c 'import torch; print(torch.__version__)') ($(date -u +%F), $(nproc) cores)"
echo "| product | m x k x n | ijepa-rs | PyTorch | ratio |"
echo "| --- | --- | ---: | ---: | ---: |"
# name:m:k:n:transposed (1 = right factor stored (n, k), as x . W^T)
for shape in "qkv x.W^T:1568:192:576:1" "fc1 x.W^T:1568:192:768:1" "fc2 x.W^T:1568:768:192:1" \
             "fc1 dX=dY.W:1568:768:192:0" "fc1 dW=dY^T.X:768:1568:192:0"; do
  IFS=: read -r name m k n t <<< "$shape"
  flag=(); [ "$t" = 1 ] && flag=(--transposed)
  ours=(); theirs=()
  for round in $(seq "${ROUNDS:-3}"); do
    ours+=("$(target/release/ijepa-cli bench matmul --m "$m" --k "$k" --n "$n" "${flag[@]}" --json | field gflops)")
    theirs+=("$("$PYTHON" bench/torch_matmul.py --m "$m" --k "$k" --n "$n" "${flag[@]}" | field gflops)")
  done
  o=$(printf '%s\n' "${ours[@]}" | median); p=$(printf '%s\n' "${theirs[@]}" | median)
  awk -v s="$name" -v d="$m x $k x $n" -v o="$o" -v p="$p" 'BEGIN { printf "| %s | %s | %.1f | %.1f | %.2fx |\n", s, d, o, p, o / p }'
done
