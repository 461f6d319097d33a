#!/usr/bin/env python3
"""Writes N smooth, photo-like 500x375 JPEGs (quality 90) for bench/data.sh.

    python bench/make_jpegs.py DIR N
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def main():
    out, n = Path(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(0)
    for i in range(n):
        d = out / f"class{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((500, 375), Image.BICUBIC).filter(ImageFilter.DETAIL)
        noise = rng.normal(0, 6, size=(375, 500, 3))
        arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i:05d}.jpg", quality=90)


if __name__ == "__main__":
    main()
