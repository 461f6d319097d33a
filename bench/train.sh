#!/usr/bin/env bash
# One whole I-JEPA training step (forward, backward, AdamW, EMA), ijepa-rs vs our PyTorch
# reference (torch.optim.AdamW, the official EMA update), in one run: bench/step.sh's train mode.
#
#   bash bench/train.sh            # ViT-Ti/16 (gap), 224², batch 8, predictor 384x6
exec bash "$(dirname "$0")/step.sh" train
