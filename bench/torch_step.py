#!/usr/bin/env python3
"""PyTorch reference timing of one I-JEPA forward + backward (with --train: + AdamW + EMA).

The model is our PyTorch reference (ijepa-train/tests/fixtures/ijepa_reference.py,
timm blocks), f32, eager, with the same fixed masks as `ijepa-cli bench step`, in
proportion to the N patches: context = patches 0..60N/196, four targets of 36N/196
patches from 60N/196 + 30N/196·i (at 14 x 14: 0..60, and 36 from 60, 90, 120, 150).
Prints one JSON object (median seconds per step, images/s, peak RSS).

    python bench/torch_step.py --img 224 --patch 16 --dim 192 --depth 12 --heads 3 --batch 8

On a GPU (bench/gpu.sh): --device cuda --bf16 (the official `use_bfloat16`: the forward and
the loss under torch.autocast(bfloat16), backward outside it, as the official train.py) and
--flops (the FLOPs of one forward + backward as torch.utils.flop_counter.FlopCounterMode
counts them, for MFU); the peak memory is then torch.cuda.max_memory_allocated and _reserved too.
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
    ap.add_argument("--train", action="store_true", help="add the AdamW step and the EMA update")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (the official use_bfloat16)")
    ap.add_argument("--flops", action="store_true", help="count one forward + backward's FLOPs")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed steps, print torch.profiler's per-kernel table of one more step")
    a = ap.parse_args()
    dev = torch.device(a.device)
    grid = a.img // a.patch
    student = Encoder(a.img, a.patch, a.dim, a.depth, a.heads).to(dev)
    teacher = Encoder(a.img, a.patch, a.dim, a.depth, a.heads).to(dev)
    predictor = Predictor(a.dim, grid, a.pred_dim, a.pred_depth, a.heads, 1e-6, True).to(dev)
    images = torch.randn(a.batch, 3, a.img, a.img, device=dev)
    n = grid * grid
    context, length, gap = 60 * n // 196, 36 * n // 196, 30 * n // 196
    ctx = torch.arange(context, device=dev).expand(a.batch, -1)
    targets = [torch.arange(context + i * gap, context + i * gap + length, device=dev).expand(a.batch, -1)
               for i in range(4)]

    def forward():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            return objective(student, teacher, predictor, images, ctx, targets)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    flops = None
    if a.flops:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            forward().backward()
        flops = counter.get_total_flops()
        for p in list(student.parameters()) + list(predictor.parameters()):
            p.grad = None
    # The official optimizer: AdamW, decay on weights of rank >= 2, none on biases / 1-D.
    params = [p for m in (student, predictor) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        dict(params=[p for p in params if p.ndim >= 2], weight_decay=0.04),
        dict(params=[p for p in params if p.ndim < 2], weight_decay=0.0),
    ], lr=1e-4)
    def step():
        loss = forward()
        loss.backward()
        if a.train:
            optimizer.step()
            with torch.no_grad():  # the official EMA update
                for q, k in zip(student.parameters(), teacher.parameters()):
                    k.data.mul_(0.996).add_((1.0 - 0.996) * q.detach().data)
        sync()

    times = []
    for i in range(a.warmup + a.iters):
        start = time.perf_counter()
        step()
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
        for p in list(student.parameters()) + list(predictor.parameters()):
            p.grad = None

    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
        key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
        try:
            print(prof.key_averages().table(sort_by=key, row_limit=60))
        except Exception:  # newer PyTorch names it device_time_total
            print(prof.key_averages().table(sort_by="device_time_total", row_limit=60))
    median = sorted(times)[len(times) // 2]
    out = dict(implementation=f"PyTorch {torch.__version__} eager (reference, timm blocks)",
               what="fwd+bwd+AdamW+EMA" if a.train else "fwd+bwd",
               seconds_per_step=median, images_per_second=a.batch / median,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               threads=torch.get_num_threads(), device=a.device, bf16=a.bf16)
    if flops is not None:
        out["flops_per_step"] = flops
    if dev.type == "cuda":
        out["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
