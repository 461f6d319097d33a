#!/usr/bin/env bash
# The GPU check of ijepa-rs in one run (about 5 minutes on one H100/H200):
#   1. parity: one training step's loss and every gradient on the GPU against the f32 CPU step,
#      same weights and batch (`ijepa-cli bench parity`): f32 within 1e-4, bf16 within 2e-2
#      (relative to each tensor's largest value);
#   2. the whole training step (fwd + bwd + AdamW + EMA, bf16 autocast, predictor 384 x 6, the
#      fixed masks of bench/torch_step.py) beside the machine's PyTorch eager on our PyTorch
#      reference (timm blocks, torch.autocast bf16): ViT-B/16 at batch 128 and 256, ViT-L/16 at
#      64, ViT-H/14 at 32 — img/s, peak GPU memory (nvidia-smi, sampled every 100 ms, the same
#      way for both), and MFU from the FLOPs PyTorch's FlopCounterMode counts for one step.
#
#   BIN=path/to/ijepa-cli bash bench/gpu.sh        # BIN: a `--features cuda` release build
#
# Settings (environment): BIN (default target/release/ijepa-cli), PYTHON (default python3, with
# torch and CUDA), GPU (default 0), ROUNDS (alternating rounds per model, default 2; medians),
# ITERS (timed steps, default 10), PEAK_TFLOPS (the card's dense bf16 peak; default by name:
# H100/H200 989, A100 312), CONFIGS ("name:timm-model:patch:dim:depth:heads:batch ..."),
# DEVICE=cpu (a dry run of the script's logic on the CPU with tiny models: no GPU figures).
# libcublas.so.13 / libcurand.so.10 are taken from PyTorch's own CUDA wheels when the loader
# cannot find them. Exit status: 1 if a parity check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ijepa-cli}
PYTHON=${PYTHON:-python3}
GPU=${GPU:-0}
ROUNDS=${ROUNDS:-2}
ITERS=${ITERS:-10}
DEVICE=${DEVICE:-cuda}

if [ "$DEVICE" = cpu ]; then
  dev=cpu
  CONFIGS=${CONFIGS:-"ViT-Ti/16-d2:vit_tiny_patch16_224:16:192:2:3:4"}
  PRED_DEPTH=2
else
  dev="cuda:$GPU"
  CONFIGS=${CONFIGS:-"ViT-B/16:vit_base_patch16_224:16:768:12:12:128 ViT-B/16:vit_base_patch16_224:16:768:12:12:256 ViT-L/16:vit_large_patch16_224:16:1024:24:16:64 ViT-H/14:vit_huge_patch14_224:14:1280:32:16:32"}
  PRED_DEPTH=6
fi
[ -x "$BIN" ] || { echo "no binary at $BIN (build: README, GPU)" >&2; exit 2; }

# cuBLAS / cuRAND for candle's CUDA backend: the loader's, else PyTorch's wheels.
torch_libs=$("$PYTHON" - <<'EOF' 2>/dev/null
import glob, os, torch
root = os.path.dirname(os.path.dirname(torch.__file__))
print(":".join(sorted({os.path.dirname(p) for n in ("libcublas.so.*", "libcurand.so.*")
                       for p in glob.glob(f"{root}/nvidia/**/{n}", recursive=True)})))
EOF
)
[ -n "$torch_libs" ] && export LD_LIBRARY_PATH="$torch_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

field() { sed -n "s/.*\"$1\": *\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -n 1; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [ "$DEVICE" = cpu ]; then
  card="CPU dry run ($(nproc) cores)"; peak=${PEAK_TFLOPS:-1}
else
  card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i "$GPU")
  case "$card" in
    *H100*|*H200*) peak=${PEAK_TFLOPS:-989} ;;
    *A100*) peak=${PEAK_TFLOPS:-312} ;;
    *) peak=${PEAK_TFLOPS:?"unknown card $card: set PEAK_TFLOPS (dense bf16)"} ;;
  esac
fi
torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "none")
echo "# bench/gpu.sh, $(date -u +%F), $card, peak $peak TFLOP/s bf16, $("$BIN" --version), PyTorch $torch_version"

# Peak memory of a command: nvidia-smi sampled every 100 ms while it runs (MiB of the card).
sampled() {
  local log; log=$(mktemp)
  if [ "$DEVICE" = cpu ]; then
    "$@"; local rc=$?; echo "peak_mib=nan" >&2; rm -f "$log"; return $rc
  fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$GPU" -lms 100 > "$log" &
  local smi=$!
  "$@"; local rc=$?
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  echo "peak_mib=$(sort -n "$log" | tail -n 1)" >&2
  rm -f "$log"
  return $rc
}

failed=0
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "## parity against the f32 CPU step"
for precision in f32 bf16; do
  out=$("$BIN" bench parity --device "$dev" --precision "$precision" --json) || failed=1
  echo "- $precision: $out"
done

echo "## training step (fwd+bwd+AdamW+EMA), bf16 autocast, predictor 384x$PRED_DEPTH"
echo "| model | batch | ijepa-rs img/s | PyTorch img/s | ratio | ijepa-rs peak MiB | PyTorch peak MiB | ijepa-rs MFU | PyTorch MFU |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for cfg in $CONFIGS; do
  IFS=: read -r name model patch dim depth heads batch <<< "$cfg"
  ours_ips=(); theirs_ips=(); ours_mem=(); theirs_mem=(); flops=""
  for round in $(seq "$ROUNDS"); do
    o=$(sampled "$BIN" bench train --device "$dev" --precision bf16 --model "$model" --batch "$batch" \
          --predictor-depth "$PRED_DEPTH" --iters "$ITERS" --warmup 2 --json 2>"$tmp/ours.err")
    ours_ips+=("$(echo "$o" | field images_per_second)"); ours_mem+=("$(sed -n 's/^peak_mib=//p' "$tmp/ours.err")")
    [ -n "$o" ] || { echo "ijepa-rs failed on $name b$batch:" >&2; tail -n 5 "$tmp/ours.err" >&2; }
    count=(); [ -z "$flops" ] && count=(--flops)
    t=$(sampled "$PYTHON" bench/torch_step.py --train --device "$dev" --bf16 "${count[@]}" --img 224 \
          --patch "$patch" --dim "$dim" --depth "$depth" --heads "$heads" --pred-depth "$PRED_DEPTH" \
          --batch "$batch" --iters "$ITERS" --warmup 2 2>"$tmp/theirs.err")
    theirs_ips+=("$(echo "$t" | field images_per_second)"); theirs_mem+=("$(sed -n 's/^peak_mib=//p' "$tmp/theirs.err")")
    [ -z "$flops" ] && flops=$(echo "$t" | field flops_per_step)
    [ -n "$t" ] || { echo "PyTorch failed on $name b$batch:" >&2; tail -n 5 "$tmp/theirs.err" >&2; }
  done
  oi=$(printf '%s\n' "${ours_ips[@]}" | median); ti=$(printf '%s\n' "${theirs_ips[@]}" | median)
  om=$(printf '%s\n' "${ours_mem[@]}" | median); tm=$(printf '%s\n' "${theirs_mem[@]}" | median)
  awk -v n="$name" -v b="$batch" -v oi="$oi" -v ti="$ti" -v om="$om" -v tm="$tm" -v f="${flops:-0}" -v p="$peak" \
    -v ro="$(printf '%s ' "${ours_ips[@]}")" -v rt="$(printf '%s ' "${theirs_ips[@]}")" 'BEGIN {
      mo = f * oi / b / (p * 1e12); mt = f * ti / b / (p * 1e12)
      printf "| %s | %d | %.1f | %.1f | %.2fx | %s | %s | %.1f %% | %.1f %% |\n", n, b, oi, ti, oi / ti, om, tm, 100 * mo, 100 * mt
      printf "<!-- rounds: ijepa-rs %s; PyTorch %s; FLOPs per step %.4g -->\n", ro, rt, f }'
done
exit "$failed"
