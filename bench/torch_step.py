#!/usr/bin/env python3
"""PyTorch reference timing of one I-JEPA forward + backward (no optimizer).

The model is our PyTorch reference (ijepa-train/tests/fixtures/ijepa_reference.py,
timm blocks), f32, eager, with the same fixed masks as `ijepa-cli bench step`:
context = patches 0..60, four targets of 36 patches starting at 60, 90, 120, 150.
Prints one JSON object (median seconds per step, images/s, peak RSS).

    python bench/torch_step.py --img 224 --patch 16 --dim 192 --depth 12 --heads 3 --batch 8
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ijepa-train" / "tests" / "fixtures"))
from ijepa_reference import Encoder, Predictor, objective  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(img=224, patch=16, dim=192, depth=12, heads=3, pred_dim=384, pred_depth=6, batch=8,
                     iters=5, warmup=1).items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=v)
    a = ap.parse_args()
    grid = a.img // a.patch
    student = Encoder(a.img, a.patch, a.dim, a.depth, a.heads)
    teacher = Encoder(a.img, a.patch, a.dim, a.depth, a.heads)
    predictor = Predictor(a.dim, grid, a.pred_dim, a.pred_depth, a.heads, 1e-6, True)
    images = torch.randn(a.batch, 3, a.img, a.img)
    ctx = torch.arange(60).expand(a.batch, -1)
    targets = [torch.arange(s, s + 36).expand(a.batch, -1) for s in (60, 90, 120, 150)]
    times = []
    for i in range(a.warmup + a.iters):
        start = time.perf_counter()
        loss = objective(student, teacher, predictor, images, ctx, targets)
        loss.backward()
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
        for p in list(student.parameters()) + list(predictor.parameters()):
            p.grad = None
    median = sorted(times)[len(times) // 2]
    print(json.dumps(dict(implementation=f"PyTorch {torch.__version__} eager (reference, timm blocks)",
                          seconds_per_step=median, images_per_second=a.batch / median,
                          peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          threads=torch.get_num_threads())))


if __name__ == "__main__":
    main()
