#!/usr/bin/env python3
"""timm eager forward throughput, the reference for `ijepa-cli bench forward`.

Same model (random weights), batch and image size; torch.inference_mode;
median over timed passes after warm-up. Prints one JSON object.

    pip install -r ijepa-encoder/tests/fixtures/requirements.txt
    python bench/timm_forward.py --model vit_small_patch16_224 --batch 8
"""
import argparse
import resource
import json
import time

import timm
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    model = timm.create_model(args.model, pretrained=False, num_classes=0).eval()
    h, w = model.patch_embed.img_size
    images = torch.randn(args.batch, 3, h, w)
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            model.forward_features(images)
        for _ in range(args.iters):
            start = time.perf_counter()
            model.forward_features(images)
            times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    print(json.dumps(dict(implementation=f"timm {timm.__version__} eager, torch {torch.__version__}",
                          model=args.model, batch=args.batch, iters=args.iters, median_ms=median * 1e3,
                          images_per_second=args.batch / median, threads=torch.get_num_threads(),
                          peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


if __name__ == "__main__":
    main()
