#!/usr/bin/env python3
"""torchvision + PIL reference for `ijepa-cli bench data`: the official I-JEPA
pretraining transform (RandomResizedCrop(size, scale=(0.3, 1.0)) bilinear,
ToTensor, Normalize) over one pass of an image folder, in one process
(num_workers=0: one core), batched by a DataLoader with the default collate.

    python bench/torch_data.py --data DIR [--size 224 --batch 32]
"""
import argparse
import json
import time
from pathlib import Path

import torch
import torchvision
import torchvision.transforms as T
from PIL import Image


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(1)
    transform = T.Compose([
        T.RandomResizedCrop(a.size, scale=(0.3, 1.0)),
        T.ToTensor(),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
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
