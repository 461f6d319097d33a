#!/usr/bin/env python3
"""timm's Vision Transformer registry as data: `timm_vit_registry.json`.

For every entrypoint timm registers in `timm.models.vision_transformer`, the
exact keyword arguments it passes to `_create_vision_transformer` (captured by
intercepting that call, so nothing is read off names), and what timm's
constructor builds from them (each model instantiated on the meta device):
the state-dict keys and shapes outside the blocks and of block 0 (all blocks
are checked to be alike), and the facts shapes do not show (heads, norm type
and epsilon, activation, layer classes, pooling). `VisionTransformer.__init__`'s
own defaults are recorded once. ijepa-encoder resolves names from this table
only (`ijepa_encoder::registry`); its tests compare every supported
architecture with the `built` record.

Layer arguments are written in a small vocabulary: norms as
{"type": "layernorm" | "rmsnorm" | ..., "eps": x}, activations as "gelu",
"gelu_tanh", "quick_gelu", "silu", ..., and other layer classes by name
(with a partial's keywords).

    pip install torch==2.15.0 timm==1.0.31
    python ijepa-encoder/data/make_timm_registry.py
"""
import functools
import inspect
import json
import os

import timm
import torch
import torch.nn as nn
import timm.models.vision_transformer as vt
from timm.layers import get_act_layer, get_norm_layer

HERE = os.path.dirname(os.path.abspath(__file__))

ACTIVATIONS = {
    "GELU": "gelu",
    "GELUTanh": "gelu_tanh",
    "QuickGELU": "quick_gelu",
    "SiLU": "silu",
    "Swish": "silu",
    "ReLU": "relu",
}


def norm_spec(layer):
    """A norm layer (class, partial or timm name) as {"type", "eps"}."""
    if layer is None:
        return None
    if isinstance(layer, str):
        layer = get_norm_layer(layer)
    keywords = {}
    if isinstance(layer, functools.partial):
        keywords = dict(layer.keywords)
        layer = layer.func
    eps = keywords.pop("eps", inspect.signature(layer).parameters["eps"].default)
    spec = {"type": layer.__name__.lower(), "eps": float(eps)}
    if keywords:
        spec["keywords"] = {k: repr(v) for k, v in keywords.items()}
    return spec


def act_spec(layer):
    if layer is None:
        return None
    if isinstance(layer, str):
        layer = get_act_layer(layer)
    if isinstance(layer, functools.partial):
        return layer.func.__name__ + repr(layer.keywords)
    name = layer.__name__
    if name == "GELU" and layer is nn.GELU:
        return "gelu"
    return ACTIVATIONS.get(name, name)


def layer_spec(layer):
    """Any other layer class: its name, with a partial's keywords."""
    if layer is None or isinstance(layer, str):
        return layer
    if isinstance(layer, functools.partial):
        kw = {k: (v.__name__ if inspect.isclass(v) else repr(v)) for k, v in layer.keywords.items()}
        return {"type": layer.func.__name__, "keywords": kw}
    return layer.__name__


def serialise(kwargs):
    out = {}
    for k, v in kwargs.items():
        if k in ("norm_layer", "embed_norm_layer"):
            out[k] = norm_spec(v)
        elif k == "act_layer":
            out[k] = act_spec(v)
        elif k in ("block_fn", "mlp_layer", "attn_layer", "embed_layer"):
            out[k] = layer_spec(v)
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            json.dumps(v)  # everything else must be plain data
            out[k] = v
    return out


def defaults():
    sig = inspect.signature(vt.VisionTransformer.__init__)
    out = {}
    for name, p in sig.parameters.items():
        if name in ("self", "device", "dtype") or p.default is inspect.Parameter.empty:
            continue
        out[name] = p.default
    return serialise(out)


def capture(names):
    captured = {}
    real = vt._create_vision_transformer

    class Stop(Exception):
        pass

    def fake(variant, pretrained=False, use_naflex=None, **kwargs):
        captured[variant] = kwargs
        raise Stop

    vt._create_vision_transformer = fake
    try:
        for n in names:
            try:
                timm.models._registry._model_entrypoints[n](pretrained=False)
            except Stop:
                pass
    finally:
        vt._create_vision_transformer = real
    return captured


def built(name):
    with torch.device("meta"):
        m = timm.create_model(name, pretrained=False, num_classes=0)
    sd = {k: list(v.shape) for k, v in m.state_dict().items()}
    blocks = [k for k in sd if k.startswith("blocks.")]
    depth = len(m.blocks)
    block0 = {k[len("blocks.0."):]: s for k, s in sd.items() if k.startswith("blocks.0.")}
    for i in range(depth):
        here = {k[len(f"blocks.{i}."):]: s for k, s in sd.items() if k.startswith(f"blocks.{i}.")}
        assert here == block0, f"{name}: block {i} differs from block 0"
    b = m.blocks[0]
    norm1 = getattr(b, "norm1", None)
    act = getattr(getattr(b, "mlp", None), "act", None)
    facts = {
        "depth": depth,
        "num_heads": getattr(getattr(b, "attn", None), "num_heads", None),
        "norm": type(norm1).__name__ if norm1 is not None else None,
        "norm_eps": float(norm1.eps) if hasattr(norm1, "eps") else None,
        "act": ACTIVATIONS.get(type(act).__name__, type(act).__name__) if act is not None else None,
        "act_approximate": getattr(act, "approximate", None),
        "block": type(b).__name__,
        "attn": type(getattr(b, "attn", None)).__name__,
        "mlp": type(getattr(b, "mlp", None)).__name__,
        "embed": type(m.patch_embed).__name__,
        "num_prefix_tokens": m.num_prefix_tokens,
        "no_embed_class": m.no_embed_class,
        "global_pool": m.global_pool,
        "pool_include_prefix": m.pool_include_prefix,
        "img_size": list(m.patch_embed.img_size),
        "patch_size": list(m.patch_embed.patch_size),
        "dynamic_img_size": m.dynamic_img_size,
    }
    return {
        "state": {k: s for k, s in sd.items() if not k.startswith("blocks.")},
        "block": block0,
        "facts": facts,
    }


def tags(name):
    """Each pretrained tag's part of the constructor arguments: timm's builder
    sets num_classes, global_pool and in_chans from the pretrained config
    when the caller does not, and img_size when fixed_input_size."""
    from timm.models._registry import _model_with_tags, get_pretrained_cfg
    out = {}
    for full in _model_with_tags.get(name, []):
        cfg = get_pretrained_cfg(full)
        entry = {
            "input_size": list(cfg.input_size),
            "fixed_input_size": bool(cfg.fixed_input_size),
            "num_classes": cfg.num_classes,
        }
        pool = getattr(cfg, "global_pool", None)
        if pool is not None:
            entry["global_pool"] = pool
        out[full.split(".", 1)[1] if "." in full else ""] = entry
    return out


def main():
    names = sorted(timm.list_models(module="vision_transformer"))
    captured = capture(names)
    missing = [n for n in names if n not in captured]
    assert not missing, f"not captured: {missing}"
    table = {}
    for n in names:
        from timm.models._registry import _model_with_tags
        default_tag = (_model_with_tags.get(n) or [n])[0].partition(".")[2]
        table[n] = {
            "args": serialise(captured[n]),
            "default_tag": default_tag,
            "tags": tags(n),
            "built": built(n),
        }
    out = {
        "timm_version": timm.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "module": "timm.models.vision_transformer",
        "constructor_defaults": defaults(),
        "architectures": table,
    }
    path = os.path.join(HERE, "timm_vit_registry.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(table)} architectures, timm {timm.__version__} -> {path}")


if __name__ == "__main__":
    main()
