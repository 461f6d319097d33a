#!/usr/bin/env bash
# Mask sampling speed, ijepa-rs vs the official I-JEPA collator, in one run.
#
#   bash bench/masks.sh /path/to/facebookresearch/ijepa
#
# Both sides draw the paper's masks (14x14 grid, batch 128, 4 targets + 1
# context) on one pinned core; the figure is mask sets (images) per second.
# The Python side needs `pip install -r ijepa-masking/tests/fixtures/requirements.txt`.
set -euo pipefail
cd "$(dirname "$0")/.."
ijepa_src=${1:?usage: bash bench/masks.sh /path/to/facebookresearch/ijepa}
pin=(); command -v taskset >/dev/null && pin=(taskset -c 0)

cargo build --release -q -p ijepa-cli
rate() { sed -n 's/.*"sets_per_second": *\([0-9.]*\).*/\1/p'; }
ours=$("${pin[@]}" target/release/ijepa-cli masks --batches 20000 --json | rate)
compat=$("${pin[@]}" target/release/ijepa-cli masks --batches 20000 --official-compat --json | rate)
official=$("${pin[@]}" python3 ijepa-masking/tests/fixtures/official_masks.py \
    --ijepa-src "$ijepa_src" --bench --batches 100 2>/dev/null | rate)

echo "mask sets/s, 14x14, batch 128, one core ($(date -u +%F), $(uname -m))"
row() { awk -v n="$1" -v r="$2" -v b="$official" 'BEGIN { printf "%-34s %12.0f  %6.0fx\n", n, r, r / b }'; }
row "official MaskCollator (PyTorch)" "$official"
row "ijepa-rs official_compat" "$compat"
row "ijepa-rs default (bias fixes)" "$ours"
