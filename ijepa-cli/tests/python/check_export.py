#!/usr/bin/env python3
"""Exported encoders load in timm and transformers and give ijepa-rs's features.

1. trains a tiny ijepa-rs run (2 steps, synthetic data);
2. exports its target encoder with `ijepa-cli export --format timm` and `--format hf`;
3. embeds the test images with `ijepa-cli embed --weights RUN` (ijepa-rs's own preprocessing);
4. loads the timm export with
   `timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...), **model_args)`
   and the HF export with `IJepaModel.from_pretrained(DIR)`, prepares the same images with
   timm's transform from the exported pretrained_cfg, and compares the mean-pooled patch
   tokens with ijepa-rs's `pooled` features: max |diff| <= 1e-4.

    python ijepa-cli/tests/python/check_export.py [--cli target/release/ijepa-cli]

Needs torch, timm, transformers and safetensors (ijepa-encoder/tests/fixtures/requirements.txt).
.ci/run calls it when they are importable and prints a visible SKIPPED line otherwise.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import IJepaModel

ROOT = Path(__file__).resolve().parents[3]
IMAGES = ROOT / "ijepa-cli" / "tests" / "fixtures" / "embed_images"
TOLERANCE = 1e-4


def cli(binary, *args):
    subprocess.run([str(binary), *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=str(ROOT / "target" / "debug" / "ijepa-cli"))
    binary = Path(ap.parse_args().cli)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = tmp / "run"
        cli(binary, "pretrain", "--out", run, "--set", "model.args.img_size=96", "--set", "model.args.patch_size=8",
            "--set", "model.args.embed_dim=48", "--set", "model.args.num_heads=3", "--set", "model.args.depth=2",
            "--set", "data.synthetic_images=8", "--batch-size", "4", "--max-steps", "2", "--no-probe")
        cli(binary, "export", "--checkpoint", run, "--format", "timm", "--out", tmp / "timm")
        cli(binary, "export", "--checkpoint", run, "--format", "hf", "--out", tmp / "hf")
        cli(binary, "embed", "--weights", run, "--images", IMAGES, "--out", tmp / "ours.safetensors")
        ours = load_file(tmp / "ours.safetensors")["pooled"]
        with open(tmp / "ours.safetensors", "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        order = json.loads(header["__metadata__"]["images"])

        config = json.loads((tmp / "timm" / "config.json").read_text())
        model = timm.create_model(
            config["architecture"], pretrained=True,
            pretrained_cfg_overlay=dict(file=str(tmp / "timm" / "model.safetensors"),
                                        **config["pretrained_cfg"]),
            **config["model_args"]).eval()
        data_cfg = timm.data.resolve_data_config(model=model)
        transform = timm.data.create_transform(**data_cfg)
        x = torch.stack([transform(Image.open(IMAGES / name).convert("RGB")) for name in order])
        with torch.no_grad():
            tokens = model.forward_features(x)
            timm_pooled = tokens[:, model.num_prefix_tokens:].mean(1)
            hf = IJepaModel.from_pretrained(tmp / "hf").eval()
            hf_pooled = hf(pixel_values=x).last_hidden_state.mean(1)
        failed = False
        for name, theirs in [("timm", timm_pooled), ("transformers IJepaModel", hf_pooled)]:
            diff = (theirs - ours).abs().max().item()
            ok = diff <= TOLERANCE
            failed |= not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {len(order)} images, max |diff| vs ijepa-cli embed = {diff:.2e} (tol {TOLERANCE})")
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
