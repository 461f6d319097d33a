#!/usr/bin/env python3
"""I-JEPA pretraining in PyTorch, for a side-by-side learning check of `ijepa-cli pretrain`.

The official MaskCollator (imported from a facebookresearch/ijepa checkout, never copied), our
PyTorch reference model (ijepa-train/tests/fixtures/ijepa_reference.py: timm blocks, fixed
sin-cos tables) with the official initialisation (trunc-normal 0.02, LayerNorm 1/0), torch's
AdamW with the official parameter groups, the official warm-up + cosine LR, cosine WD
0.04 -> 0.4 and linear EMA schedules, torchvision's RandomResizedCrop(scale 0.3-1.0).
Writes the target encoder (`OUT/target`), the context encoder (`OUT/context`) and the initial
weights (`OUT/init`) as timm folders, so `ijepa-cli probe --weights OUT/target ...` probes them
exactly as it probes an ijepa-rs run.

    python bench/torch_pretrain.py --ijepa-src /path/to/ijepa --data DIR --out OUT \
        --img 28 --patch 2 --dim 128 --depth 4 --heads 4 --epochs 1
"""
import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ijepa-train" / "tests" / "fixtures"))
from ijepa_reference import Encoder, Predictor, objective  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ijepa-src", required=True, help="a facebookresearch/ijepa checkout")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    for k, v in dict(img=28, patch=2, dim=128, depth=4, heads=4, pred_dim=128, pred_depth=2, epochs=1,
                     batch=32, seed=0, min_keep=10).items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=v)
    for k, v in dict(lr=5e-4, start_lr=1e-4, final_lr=1e-6, warmup=0.15).items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=float, default=v)
    ap.add_argument("--ema", type=float, nargs=2, default=[0.99, 0.999])
    return ap.parse_args()


def official_init(m):
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def save_timm(model, folder, a):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    config = dict(architecture="vit_base_patch16_gap_224", num_classes=0, global_pool="avg",
                  model_args=dict(img_size=[a.img, a.img], patch_size=a.patch, embed_dim=a.dim, depth=a.depth,
                                  num_heads=a.heads, mlp_ratio=4.0, qkv_bias=True, class_token=False,
                                  global_pool="avg", num_classes=0),
                  pretrained_cfg=dict(input_size=[3, a.img, a.img], interpolation="bicubic", crop_pct=0.875,
                                      crop_mode="center", mean=MEAN, std=STD, num_classes=0))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def main():
    a = parse()
    sys.path.insert(0, a.ijepa_src)
    from src.masks.multiblock import MaskCollator
    torch.manual_seed(a.seed)
    torch.set_num_threads(2)
    transform = T.Compose([T.RandomResizedCrop(a.img, scale=(0.3, 1.0)), T.ToTensor(), T.Normalize(MEAN, STD)])
    data = torchvision.datasets.ImageFolder(a.data, transform)
    collator = MaskCollator(input_size=(a.img, a.img), patch_size=a.patch, enc_mask_scale=(0.85, 1.0),
                            pred_mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5), nenc=1, npred=4, min_keep=a.min_keep,
                            allow_overlap=False)
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch, shuffle=True, drop_last=True,
                                         collate_fn=collator)
    student = Encoder(a.img, a.patch, a.dim, a.depth, a.heads)
    predictor = Predictor(a.dim, a.img // a.patch, a.pred_dim, a.pred_depth, a.heads, 1e-6, True)
    student.apply(official_init)
    predictor.apply(official_init)
    nn.init.trunc_normal_(predictor.mask_token, std=0.02)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad = False
    out = Path(a.out)
    save_timm(teacher, out / "init", a)

    named = list(student.named_parameters()) + list(predictor.named_parameters())
    opt = torch.optim.AdamW([
        dict(params=[p for n, p in named if "bias" not in n and p.ndim != 1]),
        dict(params=[p for n, p in named if "bias" in n or p.ndim == 1], WD_exclude=True, weight_decay=0)])
    ipe = len(loader)
    total, warm = ipe * a.epochs, int(a.warmup * ipe)

    def lr_at(s):
        if s < warm:
            return a.start_lr + s / max(1, warm) * (a.lr - a.start_lr)
        p = min(1.0, (s - warm) / max(1, total - warm))
        return a.final_lr + (a.lr - a.final_lr) * 0.5 * (1 + math.cos(math.pi * p))

    def wd_at(s):
        return 0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))

    step, start = 0, time.time()
    for _ in range(a.epochs):
        for imgs, masks_enc, masks_pred in loader:
            imgs = imgs[0] if isinstance(imgs, (list, tuple)) else imgs
            step += 1
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
                if not g.get("WD_exclude"):
                    g["weight_decay"] = wd_at(step)
            loss = objective(student, teacher, predictor, imgs, masks_enc[0], masks_pred)
            opt.zero_grad()
            loss.backward()
            opt.step()
            m = a.ema[0] + (step - 1) * (a.ema[1] - a.ema[0]) / total
            with torch.no_grad():
                for q, k in zip(student.parameters(), teacher.parameters()):
                    k.data.mul_(m).add_((1 - m) * q.detach().data)
            if step % 25 == 0:
                print(f"step {step}/{total} loss {loss.item():.4f} {time.time() - start:.0f} s", flush=True)
    save_timm(teacher, out / "target", a)
    save_timm(student, out / "context", a)
    print(f"done: {step} steps in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
