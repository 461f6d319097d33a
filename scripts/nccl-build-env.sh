#!/usr/bin/env bash
# Adds NCCL to the CUDA build environment of the project's CUDA recipe (setup-build-env.sh:
# CUDA 13.0 from PyPI wheels in $IJEPA_CUDA, default ~/.cache/ijepa-cuda), for
#   source "$IJEPA_CUDA/env.sh" && cargo build --release -p ijepa-cli --features nccl
# cudarc 0.19's `nccl` binds NCCL 2.30 and links libnccl.so from $CUDA_HOME/lib64; the wheel
# pinned here is the one PyTorch 2.15 (CUDA 13) installs, so on a GPU machine with PyTorch the
# library is found in its site-packages (nvidia/nccl/lib: put it on LD_LIBRARY_PATH).
# The `nccl` feature includes `mpi`: Open MPI and libclang must be installed too
# (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev). Idempotent.
set -euo pipefail
IJEPA_CUDA=${IJEPA_CUDA:-$HOME/.cache/ijepa-cuda}
[ -x "$IJEPA_CUDA/venv/bin/pip" ] && [ -d "$IJEPA_CUDA/toolkit/lib64" ] \
  || { echo "no CUDA build environment in $IJEPA_CUDA: run the CUDA recipe's setup-build-env.sh first" >&2; exit 1; }
"$IJEPA_CUDA/venv/bin/pip" install -q "nvidia-nccl-cu13==2.30.7"
lib=$(ls -d "$IJEPA_CUDA"/venv/lib/python3*/site-packages/nvidia/nccl/lib)
ln -sf "$lib/libnccl.so.2" "$IJEPA_CUDA/toolkit/lib64/libnccl.so"
ln -sf "$lib/libnccl.so.2" "$IJEPA_CUDA/toolkit/lib64/libnccl.so.2"
echo "ok: source $IJEPA_CUDA/env.sh && cargo build --release -p ijepa-cli --features nccl"
