#!/usr/bin/env python3
"""PyTorch's f32 CPU matrix product for `ijepa-cli bench matmul`'s shapes (bench/gemm.sh).

    python bench/torch_matmul.py --m 1568 --k 192 --n 576 --transposed

Prints one JSON object: median seconds of `a @ b` ((m, k) . (k, n); with --transposed the
right factor is stored (n, k), as a Linear's weight), GFLOP/s, threads.
"""
import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    for k in ("m", "k", "n"):
        ap.add_argument(f"--{k}", type=int, required=True)
    ap.add_argument("--transposed", action="store_true")
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    x = torch.randn(a.m, a.k)
    y = torch.randn(a.n, a.k).t() if a.transposed else torch.randn(a.k, a.n)
    x @ y
    times = []
    for _ in range(a.iters):
        start = time.perf_counter()
        x @ y
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    print(json.dumps(dict(m=a.m, k=a.k, n=a.n, transposed=a.transposed, seconds=seconds,
                          gflops=2 * a.m * a.k * a.n / seconds / 1e9, threads=torch.get_num_threads())))


if __name__ == "__main__":
    main()
