#!/usr/bin/env bash
# The GPU check of ijepa-rs in one prepared run that keeps everything it learns.
#
#   BIN=path/to/ijepa-cli[.xz] RESULTS=dir BUDGET=480 bash bench/gpu.sh
#
# In order, each command under its own timeout, none started past the deadline (BUDGET seconds
# from the start; those left print "skipped"):
#   1. preflight: the card, driver, clocks, `ldd` of the binary and its size, PyTorch/timm;
#      the measured ceilings (a bf16 8192^3 matrix product and a device-to-device copy through
#      PyTorch), so MFU is stated against the measured peak and the datasheet's;
#   2. a warm-up step per precision (module loads and PTX JIT out of the timed runs);
#   3. parity: one training step's loss and every gradient on the GPU against the f32 CPU step
#      (`ijepa-cli bench parity`): f32 within 1e-4, bf16 within 2e-2 of each tensor's scale; and
#      our CUDA kernels against the compositions they replace, on the card at the same precision
#      (`--reference composed`): f32 within 1e-5, bf16 within 1e-2;
#   4. the whole training step (fwd + bwd + AdamW + EMA, bf16 autocast, predictor 384 x 6, the
#      fixed masks of bench/torch_step.py) beside the machine's PyTorch eager + bf16 autocast on
#      our PyTorch reference (timm blocks), ours with our CUDA kernels and (first round only) with
#      them off (IJEPA_KERNELS=composed): one round of every model first, then more rounds
#      while time remains (ROUNDS at most; medians) — img/s, peak memory (each process's own
#      allocator high-water mark, and nvidia-smi sampled every 100 ms the same way for both),
#      MFU from the FLOPs PyTorch's FlopCounterMode counts for one step;
#   5. EXTRAS (default "nccl pretrain profile"): NCCL with a 1-rank communicator (the all-reduce
#      of a model's gradient set returns it unchanged; a training step through it), a real
#      `pretrain --device cuda` at bf16 with a resume halfway (loss falls, checkpoints, whether
#      the resumed run is bit-identical), and a per-kernel profile of one step of ours (ncu) and
#      of PyTorch's (torch.profiler).
#
# Everything goes to RESULTS (default: a new folder, printed): log.txt (all output),
# results.jsonl (one JSON object per result, skips and failures included), commands.log (every
# command's stderr), and the profiles. At most 8 files, so the folder can travel back whole.
# Exit status 1 if anything failed (parity beyond tolerance included), 0 otherwise.
#
# Settings (environment): BIN (default target/release/ijepa-cli; a .xz is unpacked first),
# PYTHON (python3 with torch), GPU (0), ROUNDS (3), ITERS (timed steps, 10), BUDGET (seconds,
# 480), CONFIGS ("name:timm-model:patch:dim:depth:heads:batch ..."), DATASHEET_TFLOPS (dense
# bf16; by name: H100/H200 989, A100 312), EXTRAS, DEVICE=cpu (a dry run of the script's logic
# on the CPU with tiny models: no GPU figures).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ijepa-cli}
PYTHON=${PYTHON:-python3}
GPU=${GPU:-0}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-10}
BUDGET=${BUDGET:-480}
DEVICE=${DEVICE:-cuda}
EXTRAS=${EXTRAS-nccl pretrain profile}
START=$(date +%s)
DEADLINE=$((START + BUDGET))

if [ -z "${RESULTS:-}" ]; then
  RESULTS=$(mktemp -d "${TMPDIR:-/tmp}/ijepa-gpu.XXXXXX")
fi
mkdir -p "$RESULTS" || { echo "cannot create RESULTS=$RESULTS" >&2; exit 2; }
LOG=$RESULTS/log.txt
JSONL=$RESULTS/results.jsonl
CMDLOG=$RESULTS/commands.log
: > "$JSONL"; : > "$CMDLOG"
exec > >(tee -a "$LOG") 2>&1
echo "# results in $RESULTS"

if [ "$DEVICE" = cpu ]; then
  dev=cpu
  CONFIGS=${CONFIGS:-"ViT-Ti/16-d2:vit_tiny_patch16_224:16:192:2:3:4"}
  PRED_DEPTH=2
else
  dev="cuda:$GPU"
  CONFIGS=${CONFIGS:-"ViT-B/16:vit_base_patch16_224:16:768:12:12:128 ViT-L/16:vit_large_patch16_224:16:1024:24:16:64 ViT-H/14:vit_huge_patch14_224:14:1280:32:16:32 ViT-B/16:vit_base_patch16_224:16:768:12:12:256"}
  PRED_DEPTH=6
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
case "$BIN" in
  *.xz) xz -dc "$BIN" > "$work/ijepa-cli" && chmod +x "$work/ijepa-cli" && BIN=$work/ijepa-cli \
          || { echo "cannot unpack $BIN" >&2; exit 2; } ;;
esac
[ -x "$BIN" ] || { echo "no binary at $BIN (build: README, GPU)" >&2; exit 2; }

# cuBLAS, cuRAND, NCCL for candle's CUDA backend: the loader's, else PyTorch's wheels.
torch_libs=$("$PYTHON" - <<'EOF' 2>/dev/null
import glob, os, torch
root = os.path.dirname(os.path.dirname(torch.__file__))
print(":".join(sorted({os.path.dirname(p) for n in ("libcublas.so.*", "libcurand.so.*", "libnccl.so.*", "libnvrtc.so.*", "libcudart.so.*")
                       for p in glob.glob(f"{root}/nvidia/**/{n}", recursive=True)})))
EOF
)
[ -n "$torch_libs" ] && export LD_LIBRARY_PATH="$torch_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

failed=0
now() { date +%s; }
left() { echo $((DEADLINE - $(now))); }
# One JSON line into results.jsonl (and the log): `record '{"k": ...}'`.
record() { echo "$1" >> "$JSONL"; echo "result: $1"; }
jstr() { "$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1" 2>/dev/null || printf '"%s"' "$1"; }

# run NAME LIMIT CMD...: CMD under `timeout` (LIMIT seconds, less if the deadline is nearer);
# its stdout in $out, its stderr appended to commands.log; skipped when too little time is left.
# Sets $rc (124: timed out; 125: skipped).
run() {
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 10 ]; then
    echo "skipped: $name (deadline)"
    record "{\"name\": $(jstr "$name"), \"status\": \"skipped\"}"
    out=""; rc=125; return
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  echo "## $name ($(date -u +%T), limit ${limit}s)" >> "$CMDLOG"
  echo "\$ $*" >> "$CMDLOG"
  local t0; t0=$(date +%s%N)
  out=$(timeout --kill-after=5 "$limit" "$@" 2>"$work/stderr"); rc=$?
  local secs; secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  cat "$work/stderr" >> "$CMDLOG"
  echo "$out" >> "$CMDLOG"
  if [ "$rc" -ne 0 ]; then
    failed=1
    local why="exit $rc"; [ "$rc" -eq 124 ] && why="timed out after ${limit}s"
    echo "FAILED: $name ($why); the end of its stderr:"
    tail -n 8 "$work/stderr" | sed 's/^/  | /'
    record "{\"name\": $(jstr "$name"), \"status\": \"failed\", \"rc\": $rc, \"seconds\": $secs}"
  fi
}
field() { sed -n "s/.*\"$1\": *\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -n 1; }
median() { grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# `sampled run ...`: the peak memory of a run by nvidia-smi, sampled every 100 ms (MiB of the card, the CUDA
# context included), written to $work/smi_peak ("nan" on the CPU).
sampled() {
  echo nan > "$work/smi_peak"
  if [ "$DEVICE" = cpu ]; then "$@"; return; fi
  local log; log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$GPU" -lms 100 > "$log" 2>/dev/null &
  local smi=$!
  "$@"; local status=$?
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  sort -n "$log" | tail -n 1 > "$work/smi_peak"
  rm -f "$log"
  return $status
}

echo "## preflight"
if [ "$DEVICE" = cpu ]; then
  card="CPU dry run ($(nproc) cores)"; datasheet=${DATASHEET_TFLOPS:-1}
else
  card=$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader -i "$GPU" 2>&1)
  nvidia-smi -i "$GPU" 2>&1 | head -n 20
  case "$card" in
    *H100*|*H200*) datasheet=${DATASHEET_TFLOPS:-989} ;;
    *A100*) datasheet=${DATASHEET_TFLOPS:-312} ;;
    *) datasheet=${DATASHEET_TFLOPS:-0} ;;
  esac
fi
versions=$("$PYTHON" -c 'import torch, timm; print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), timm {timm.__version__}")' 2>&1 | tail -n 1)
binsize=$(stat -c %s "$BIN")
echo "card: $card"; echo "binary: $BIN, $binsize bytes, $("$BIN" --version 2>&1)"; echo "python: $versions"
echo "ldd:"; ldd "$BIN" 2>&1 | sed 's/^/  /'
missing=$(ldd "$BIN" 2>&1 | grep -c "not found")
record "{\"name\": \"preflight\", \"card\": $(jstr "$card"), \"binary_bytes\": $binsize, \"version\": $(jstr "$("$BIN" --version 2>&1)"), \"python\": $(jstr "$versions"), \"libraries_missing\": $missing, \"date\": \"$(date -u +%FT%TZ)\"}"
[ "$missing" -eq 0 ] || { echo "FAILED: the binary's libraries are missing (ldd above)"; failed=1; }

peak=$datasheet
if [ "$DEVICE" != cpu ]; then
  run "ceilings" 60 "$PYTHON" - <<'EOF'
import json, torch
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3): a @ b
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(20): a @ b
e.record(); torch.cuda.synchronize()
tflops = 2 * 8192**3 * 20 / (s.elapsed_time(e) / 1e3) / 1e12
x = torch.empty(2**30, device="cuda", dtype=torch.uint8); y = torch.empty_like(x)
y.copy_(x); torch.cuda.synchronize()
s.record()
for _ in range(10): y.copy_(x)
e.record(); torch.cuda.synchronize()
print(json.dumps({"name": "ceilings", "bf16_matmul_tflops": tflops,
                  "copy_tb_per_s": 2 * 2**30 * 10 / (s.elapsed_time(e) / 1e3) / 1e12}))
EOF
  if [ "$rc" -eq 0 ]; then
    record "$out"
    peak=$(echo "$out" | field bf16_matmul_tflops)
  fi
fi
echo "# bench/gpu.sh, $(date -u +%F), $card, bf16 peak measured $peak TFLOP/s (datasheet $datasheet), $("$BIN" --version), $versions"

echo "## warm-up (module loads, PTX JIT)"
for precision in f32 bf16; do
  run "warm-up $precision" 120 "$BIN" bench train --device "$dev" --precision "$precision" \
    --model vit_tiny_patch16_224 --batch 8 --predictor-depth 1 --iters 1 --warmup 1 --json
done

echo "## parity: against the f32 CPU step, and the kernels against the compositions on the card"
references="cpu"; [ "$DEVICE" = cpu ] || references="cpu composed"
for reference in $references; do
  for precision in f32 bf16; do
    run "parity $precision vs $reference" 120 "$BIN" bench parity --device "$dev" --precision "$precision" \
      --reference "$reference" --json
    [ -n "$out" ] && record "$(echo "$out" | sed "s|^{|{\"name\": \"parity $precision vs $reference\", |")"
  done
done

echo "## training step (fwd+bwd+AdamW+EMA), bf16 autocast, predictor 384x$PRED_DEPTH"
declare -A ours_ips theirs_ips composed_ips ours_alloc theirs_alloc composed_alloc ours_smi theirs_smi composed_smi flops
# keep WHO KEY NAME: the JSON line of the last run's output recorded as NAME, its img/s,
# allocator peak and nvidia-smi peak appended to WHO's lists (ours, theirs, composed) under KEY.
keep() {
  local who=$1 key=$2 name=$3 json smi
  json=$(echo "$out" | grep '^{' | tail -n 1)
  [ "$rc" -eq 0 ] && [ -n "$json" ] || return 1
  smi=$(cat "$work/smi_peak")
  record "$(echo "$json" | sed "s|^{|{\"name\": \"$name\", \"smi_peak_mib\": \"${smi:-nan}\", |")"
  local -n ips=${who}_ips alloc=${who}_alloc smis=${who}_smi
  ips[$key]+="$(echo "$json" | field images_per_second) "
  alloc[$key]+="$(echo "$json" | field cuda_max_allocated_mb) "
  smis[$key]+="${smi:-nan} "
  last_json=$json
}
one_round() {  # one_round CFG [composed]: one run of ours (and of the composition), one of PyTorch's
  local cfg=$1 name model patch dim depth heads batch key count
  IFS=: read -r name model patch dim depth heads batch <<< "$cfg"
  key="$name b$batch"
  local ours=(bench train --device "$dev" --precision bf16 --model "$model" --batch "$batch"
              --predictor-depth "$PRED_DEPTH" --iters "$ITERS" --warmup 2 --json)
  if [ "${2:-}" = composed ] && [ "$DEVICE" != cpu ]; then
    sampled run "ijepa-rs composed $key" 180 env IJEPA_KERNELS=composed "$BIN" "${ours[@]}"
    keep composed "$key" "ijepa-rs composed $key"
  fi
  sampled run "ijepa-rs $key" 180 "$BIN" "${ours[@]}"
  keep ours "$key" "ijepa-rs $key"
  count=(); [ -z "${flops[$key]:-}" ] && count=(--flops)
  sampled run "PyTorch $key" 180 "$PYTHON" bench/torch_step.py --train --device "$dev" --bf16 "${count[@]}" \
    --img 224 --patch "$patch" --dim "$dim" --depth "$depth" --heads "$heads" --pred-depth "$PRED_DEPTH" \
    --batch "$batch" --iters "$ITERS" --warmup 2
  if keep theirs "$key" "PyTorch $key" && [ -z "${flops[$key]:-}" ]; then
    flops[$key]=$(echo "$last_json" | field flops_per_step)
  fi
}
for cfg in $CONFIGS; do one_round "$cfg" composed; done
round=1
while [ "$round" -lt "$ROUNDS" ] && [ "$(left)" -gt 150 ]; do
  round=$((round + 1))
  for cfg in $CONFIGS; do [ "$(left)" -gt 120 ] && one_round "$cfg"; done
done

for extra in $EXTRAS; do
  case "$extra" in
    nccl)
      echo "## NCCL, one rank (IJEPA_NCCL=1)"
      run "nccl all-reduce" 60 env IJEPA_NCCL=1 "$BIN" bench all-reduce --device "$dev" \
        --model vit_base_patch16_224 --iters 5 --json
      [ -n "$out" ] && record "$(echo "$out" | sed 's|^{|{"name": "nccl all-reduce", |')"
      # ViT-B/16 at b64 on a card; a 2-block ViT-Ti at b4 in a CPU dry run.
      small=(); [ "$DEVICE" = cpu ] && small=(--depth 2)
      run "nccl training step" 90 env IJEPA_NCCL=1 "$BIN" bench train --device "$dev" --precision bf16 \
        --model "$([ "$DEVICE" = cpu ] && echo vit_tiny_patch16_224 || echo vit_base_patch16_224)" "${small[@]}" \
        --batch "$([ "$DEVICE" = cpu ] && echo 4 || echo 64)" --predictor-depth "$PRED_DEPTH" --iters 5 --warmup 1 --json
      [ -n "$out" ] && record "$(echo "$out" | sed 's|^{|{"name": "nccl training step", |')"
      ;;
    pretrain)
      echo "## pretrain --device $dev at bf16: 300 steps straight, and 150 + --resume to 300"
      steps=${PRETRAIN_STEPS:-300}; half=$((steps / 2))
      common=(--device "$dev" --no-probe --set 'run.precision="bf16"' --set run.log_every=25
              --set "run.checkpoint_every=$half")
      run "pretrain straight" 150 "$BIN" pretrain "${common[@]}" --out "$work/straight" --max-steps "$steps"
      run "pretrain first half" 100 "$BIN" pretrain "${common[@]}" --out "$work/resumed" --max-steps "$half"
      run "pretrain resumed" 100 "$BIN" pretrain "${common[@]}" --out "$work/resumed" --max-steps "$steps" --resume
      if [ -f "$work/straight/metrics.csv" ] && [ -f "$work/resumed/metrics.csv" ]; then
        cp "$work/straight/metrics.csv" "$RESULTS/pretrain_metrics.csv"
        "$PYTHON" - "$work/straight" "$work/resumed" "$steps" <<'EOF' > "$work/pretrain.json"
import csv, hashlib, json, pathlib, sys
a, b, steps = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
def losses(run):
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(run / "metrics.csv"))}
la, lb = losses(a), losses(b)
k = max(1, min(20, len(la) // 4))  # the first and last quarter, 20 steps at most
first = sorted(la)[:k]; last = sorted(la)[-k:]
def model(run):
    latest = (run / "checkpoints" / "latest").read_text().strip() if (run / "checkpoints" / "latest").is_file() else None
    d = run / "checkpoints" / latest if latest else sorted((run / "checkpoints").glob("step-*"))[-1]
    return d, hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
(da, ha), (db, hb) = model(a), model(b)
common = sorted(set(la) & set(lb))
diff = max((abs(la[s] - lb[s]) for s in common), default=float("nan"))
print(json.dumps({"name": "pretrain", "steps": max(la), "loss_first": sum(la[s] for s in first) / len(first),
                  "loss_last": sum(la[s] for s in last) / len(last), "loss_window": k,
                  "checkpoints": sorted(p.name for p in (a / "checkpoints").glob("step-*")),
                  "resumed_steps": max(lb), "resumed_model_identical": ha == hb,
                  "max_loss_difference": diff, "straight": da.name, "resumed": db.name}))
EOF
        [ -s "$work/pretrain.json" ] && record "$(cat "$work/pretrain.json")" || failed=1
      fi
      ;;
    profile)
      echo "## per-kernel profiles of one ViT-B/16 step (depth 2, predictor depth 1, b128, bf16)"
      ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
      if [ -n "$ncu" ]; then
        run "profile ijepa-rs (ncu)" 150 "$ncu" --clock-control none --metrics gpu__time_duration.sum \
          --print-summary per-kernel --csv "$BIN" bench train --device "$dev" --precision bf16 \
          --model vit_base_patch16_224 --depth 2 --batch 128 --predictor-depth 1 --iters 1 --warmup 1
        echo "$out" > "$RESULTS/profile_ours.csv"
      else
        echo "no ncu on this machine"; record '{"name": "profile ijepa-rs (ncu)", "status": "no ncu"}'
      fi
      run "profile PyTorch (torch.profiler)" 90 "$PYTHON" bench/torch_step.py --train --device "$dev" --bf16 \
        --img 224 --patch 16 --dim 768 --depth 2 --heads 12 --pred-depth 1 --batch 128 --iters 1 --warmup 1 --profile
      echo "$out" > "$RESULTS/profile_torch.txt"
      ;;
    *) echo "unknown extra $extra" ;;
  esac
done

echo "## summary"
echo "# $card; measured bf16 peak $peak TFLOP/s, datasheet $datasheet; $versions"
echo "| model | batch | ijepa-rs img/s | PyTorch img/s | ratio | ijepa-rs peak MiB (allocated / nvidia-smi) | PyTorch peak MiB (allocated / nvidia-smi) | ijepa-rs MFU (measured / datasheet peak) | PyTorch MFU | composed img/s (peak MiB) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for cfg in $CONFIGS; do
  IFS=: read -r name model patch dim depth heads batch <<< "$cfg"
  key="$name b$batch"
  oi=$(printf '%s\n' ${ours_ips[$key]:-} | median); ti=$(printf '%s\n' ${theirs_ips[$key]:-} | median)
  oa=$(printf '%s\n' ${ours_alloc[$key]:-} | median); ta=$(printf '%s\n' ${theirs_alloc[$key]:-} | median)
  os=$(printf '%s\n' ${ours_smi[$key]:-} | median); ts=$(printf '%s\n' ${theirs_smi[$key]:-} | median)
  awk -v n="$name" -v b="$batch" -v oi="$oi" -v ti="$ti" -v oa="$oa" -v ta="$ta" -v os="$os" -v ts="$ts" \
    -v f="${flops[$key]:-0}" -v p="$peak" -v d="$datasheet" -v ro="${ours_ips[$key]:-}" -v rt="${theirs_ips[$key]:-}" \
    -v ci="$(printf '%s\n' ${composed_ips[$key]:-} | median)" -v ca="$(printf '%s\n' ${composed_alloc[$key]:-} | median)" 'BEGIN {
      r = (ti > 0) ? sprintf("%.2fx", oi / ti) : "n/a"
      mo = (p > 0) ? 100 * f * oi / b / (p * 1e12) : 0; md = (d > 0) ? 100 * f * oi / b / (d * 1e12) : 0
      tm = (p > 0) ? 100 * f * ti / b / (p * 1e12) : 0; td = (d > 0) ? 100 * f * ti / b / (d * 1e12) : 0
      printf "| %s | %d | %.1f | %.1f | %s | %.0f / %s | %.0f / %s | %.1f / %.1f %% | %.1f / %.1f %% | %.1f (%.0f) |\n", n, b, oi, ti, r, oa, os, ta, ts, mo, md, tm, td, ci, ca
      printf "<!-- rounds: ijepa-rs %s; PyTorch %s; FLOPs per step %.4g -->\n", ro, rt, f }'
done
echo "# $(( $(now) - START )) s of $BUDGET; results in $RESULTS; $([ "$failed" -eq 0 ] && echo "all passed" || echo "SOMETHING FAILED (see above)")"
exit "$failed"
