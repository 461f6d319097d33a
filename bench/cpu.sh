#!/usr/bin/env bash
# The CPU speed of ijepa-rs beside PyTorch on this machine, in one run: the whole training step
# (fwd + bwd + AdamW + EMA; our PyTorch reference model, torch.optim.AdamW and the official EMA
# update: bench/torch_step.py --train) at the sizes of the paper's smallest encoders and at the
# sizes users pretrain on a CPU, and the frozen-encoder forward (`embed`) beside timm eager.
# Each side in its own process, alternating, ROUNDS (3) rounds; img/s and peak RSS medians.
#
#   bash bench/cpu.sh                  # ONLY="demo mnist" runs some rows
#
# Rows (f32, all cores):
#   vit-ti    ViT-Ti/16 (gap) 224², batch 8, predictor 384 x 6
#   vit-s     ViT-S/16 (gap) 224², batch 8, predictor 384 x 6
#   demo      the built-in demo's model: 128 x 4 (4 heads) at 36 px / patch 4, batch 32, predictor 128 x 2
#   mnist     a 96 x 4 (3 heads) ViT at 28 px / patch 4, batch 64, predictor 96 x 2
#   fwd-s     encoder forward ViT-S/16 224², batch 8 (ijepa-cli bench forward vs timm)
#   fwd-b     encoder forward ViT-B/16 224², batch 8
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ijepa-cli
PYTHON=${PYTHON:-python3}
bin=target/release/ijepa-cli
field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" | head -n 1; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
small=(--iters 20 --warmup 2)
declare -A ours theirs what
what[vit-ti]="training step, ViT-Ti/16 224² b8, predictor 384x6"
ours[vit-ti]="bench train --model vit_tiny_patch16_224 --batch 8"
theirs[vit-ti]="bench/torch_step.py --train"
what[vit-s]="training step, ViT-S/16 224² b8, predictor 384x6"
ours[vit-s]="bench train --model vit_small_patch16_224 --batch 8"
theirs[vit-s]="bench/torch_step.py --train --dim 384 --heads 6"
what[demo]="training step, demo 128x4 36 px/4 b32, predictor 128x2"
ours[demo]="bench train --model vit_tiny_patch16_224 --image-size 36 --patch-size 4 --embed-dim 128 --depth 4 --heads 4 --predictor-embed-dim 128 --predictor-depth 2 --batch 32 ${small[*]}"
theirs[demo]="bench/torch_step.py --train --img 36 --patch 4 --dim 128 --depth 4 --heads 4 --pred-dim 128 --pred-depth 2 --batch 32 ${small[*]}"
what[mnist]="training step, 96x4 28 px/4 b64, predictor 96x2"
ours[mnist]="bench train --model vit_tiny_patch16_224 --image-size 28 --patch-size 4 --embed-dim 96 --depth 4 --heads 3 --predictor-embed-dim 96 --predictor-depth 2 --batch 64 ${small[*]}"
theirs[mnist]="bench/torch_step.py --train --img 28 --patch 4 --dim 96 --depth 4 --heads 3 --pred-dim 96 --pred-depth 2 --batch 64 ${small[*]}"
what[fwd-s]="encoder forward, ViT-S/16 224² b8 (vs timm)"
ours[fwd-s]="bench forward --model vit_small_patch16_224 --batch 8 --iters 20"
theirs[fwd-s]="bench/timm_forward.py --model vit_small_patch16_224 --batch 8 --iters 20"
what[fwd-b]="encoder forward, ViT-B/16 224² b8 (vs timm)"
ours[fwd-b]="bench forward --model vit_base_patch16_224 --batch 8 --iters 20"
theirs[fwd-b]="bench/timm_forward.py --model vit_base_patch16_224 --batch 8 --iters 20"
rows=${ONLY:-"vit-ti vit-s demo mnist fwd-s fwd-b"}
echo "ijepa-rs vs PyTorch $("$PYTHON" -c 'import torch; print(torch.__version__)'), $(date -u +%F), $(nproc) cores, ${ROUNDS:-3} alternating rounds, medians"
echo "| workload | ijepa-rs img/s | PyTorch img/s | ratio | ijepa-rs peak | PyTorch peak | rounds (ours / theirs) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
for row in $rows; do
  oi=(); ti=(); om=(); tm=()
  for round in $(seq "${ROUNDS:-3}"); do
    # shellcheck disable=SC2086
    o=$("$bin" ${ours[$row]} --json); t=$("$PYTHON" ${theirs[$row]} 2>/dev/null)
    oi+=("$(echo "$o" | field images_per_second)"); om+=("$(echo "$o" | field peak_rss_mb)")
    ti+=("$(echo "$t" | field images_per_second)"); tm+=("$(echo "$t" | field peak_rss_mb)")
  done
  m() { printf '%s\n' "$@" | median; }
  awk -v w="${what[$row]}" -v a="$(m "${oi[@]}")" -v b="$(m "${ti[@]}")" -v ma="$(m "${om[@]}")" -v mb="$(m "${tm[@]}")" \
      -v ro="$(printf '%.1f ' "${oi[@]}")" -v rt="$(printf '%.1f ' "${ti[@]}")" \
    'BEGIN { pa = (ma == "" ? "-" : sprintf("%.0f MiB", ma)); pb = (mb == "" ? "-" : sprintf("%.0f MiB", mb));
             printf "| %s | %.2f | %.2f | %.2fx | %s | %s | %s/ %s|\n", w, a, b, a / b, pa, pb, ro, rt }'
done
