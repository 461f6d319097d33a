#!/usr/bin/env python3
"""torchvision + PIL reference for `ijepa-cli bench data`: the official I-JEPA
pretraining transform (RandomResizedCrop(size, scale=(0.3, 1.0)) bilinear,
ToTensor, Normalize) over one pass of an image folder, in one process
(num_workers=0: one core), batched by a DataLoader with the default collate.
`--color-distortion` and `--blur` add the official make_transforms' colour
distortion (strength 1) and GaussianBlur(p=0.5) after the crop (the blur's
radius handed to Pillow as a float: Pillow >= 10 refuses the official tensor).

    python bench/torch_data.py --data DIR [--size 224 --batch 32 --color-distortion --blur]
"""
import argparse
import json
import time
from pathlib import Path

import torch
import torchvision
import torchvision.transforms as T
from PIL import Image, ImageFilter


class Folder(torch.utils.data.Dataset):
    def __init__(self, root, transform):
        exts = {".jpg", ".jpeg", ".png"}
        self.files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in exts)
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with open(self.files[i], "rb") as f:
            return self.transform(Image.open(f).convert("RGB"))


class GaussianBlur:
    """The official src/transforms.py GaussianBlur, radius as a float."""

    def __call__(self, img):
        if torch.bernoulli(torch.tensor(0.5)) == 0:
            return img
        radius = 0.1 + torch.rand(1) * 1.9
        return img.filter(ImageFilter.GaussianBlur(radius=float(radius)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--color-distortion", action="store_true")
    ap.add_argument("--blur", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    steps = [T.RandomResizedCrop(a.size, scale=(0.3, 1.0))]
    if a.color_distortion:
        steps += [T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), T.RandomGrayscale(p=0.2)]
    if a.blur:
        steps += [GaussianBlur()]
    transform = T.Compose(steps + [T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    loader = torch.utils.data.DataLoader(Folder(a.data, transform), batch_size=a.batch, shuffle=True,
                                         num_workers=0, drop_last=True)
    start = time.perf_counter()
    n = sum(batch.shape[0] for batch in loader)
    secs = time.perf_counter() - start
    print(json.dumps(dict(implementation=f"torchvision {torchvision.__version__} + Pillow {Image.__version__}",
                          images=n, seconds=secs, images_per_second=n / secs, workers=1,
                          images_per_second_per_worker=n / secs)))


if __name__ == "__main__":
    main()
