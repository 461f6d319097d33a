#!/usr/bin/env bash
# Builds the `cuda` + `nccl` ijepa-cli on a machine without a GPU (CUDA 13.0 and NCCL from PyPI
# wheels, the CUDA recipe in ../shared/cuda or $CUDA_RECIPE) and packs it for carrying to one:
# .gpu/ijepa-cli.xz (about 8.5 MB; 62 MB stripped, 165 MB with line tables). A first build
# compiles candle's CUDA kernels: about 16 minutes on 2 cores. Then, on the GPU machine:
#   BIN=.gpu/ijepa-cli.xz RESULTS=results BUDGET=420 bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${CUDA_RECIPE:-../shared/cuda}
cargo fetch --locked
bash "$recipe/setup-build-env.sh"
bash scripts/nccl-build-env.sh
# shellcheck disable=SC1091
source "${IJEPA_CUDA:-$HOME/.cache/ijepa-cuda}/env.sh"
target=${CARGO_TARGET_DIR:-target/cuda}
CARGO_TARGET_DIR=$target cargo build --release --locked --features nccl -p ijepa-cli
mkdir -p .gpu
strip -o .gpu/ijepa-cli "$target/release/ijepa-cli"
xz -T0 -6 -f .gpu/ijepa-cli
ls -l .gpu/ijepa-cli.xz
