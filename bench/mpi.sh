#!/usr/bin/env bash
# Data-parallel overhead on one machine, in one run (the `mpi` feature, Open MPI):
#  1. the whole I-JEPA training step (ViT-Ti/16 224², global batch 8, predictor 384×6) as
#     1 process × N threads and as N ranks × 1 thread under mpirun, alternating, 3 rounds;
#  2. one all-reduce of the ViT-B/16 + predictor 384×6 gradient set (≈ 100 M floats) between
#     N local ranks, beside that model's training step at global batch 8 on the same ranks.
#
#   bash bench/mpi.sh [N=2]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2}
cargo build --release -q -p ijepa-cli --features mpi
bin=target/release/ijepa-cli
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ranks() { mpirun -np "$n" --oversubscribe -x RAYON_NUM_THREADS=1 "$bin" "$@"; }
field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "I-JEPA training step, ViT-Ti/16 224² global batch 8, predictor 384x6 ($(date -u +%F), $(nproc) cores)"
ones=(); manys=()
for round in 1 2 3; do
  one=$(RAYON_NUM_THREADS=$n "$bin" bench train --model vit_tiny_patch16_224 --batch 8 --json | field images_per_second)
  many=$(ranks bench train --model vit_tiny_patch16_224 --batch 8 --json | field images_per_second)
  ones+=("$one"); manys+=("$many")
  awk -v r="$round" -v n="$n" -v a="$one" -v b="$many" \
    'BEGIN { printf "round %d: 1 process x %d threads %.2f img/s, %d ranks x 1 thread %.2f img/s, ratio %.2fx\n", r, n, a, n, b, b / a }'
done
a=$(printf '%s\n' "${ones[@]}" | median); b=$(printf '%s\n' "${manys[@]}" | median)
awk -v n="$n" -v a="$a" -v b="$b" 'BEGIN { printf "median: 1 process %.2f img/s, %d ranks %.2f img/s, ratio %.2fx\n", a, n, b, b / a }'

echo "ViT-B/16 + predictor 384x6 over $n ranks x 1 thread"
step=$(ranks bench train --model vit_base_patch16_224 --batch 8 --iters 2 --json | field seconds_per_step)
ar=$(ranks bench all-reduce --model vit_base_patch16_224 --json)
awk -v s="$step" -v t="$(echo "$ar" | field seconds)" -v f="$(echo "$ar" | field floats)" \
  'BEGIN { printf "training step %.2f s; all-reduce of %.1f M floats %.3f s = %.1f %% of the step\n", s, f / 1e6, t, 100 * t / s }'
