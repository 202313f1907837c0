"""Parameters and FLOPs of FAN presets (the table in docs/presets.md).

FLOPs are multiply-accumulates counted by mmengine's ``FlopAnalyzer`` (fvcore's convention).
The attention products (``scaled_dot_product_attention``, which the stock counter skips) are
counted by the handle that :mod:`stl_mm.compat.flops` adds to mmengine's default handles on
``import stl_mm``, so the upstream ``get_flops.py`` tools count them too.
Classification FLOPs include the class head (and the token head of the ``*_token`` models).
Two totals are given: everything the counter knows (convolutions, linear layers, attention
products, norms) and convolutions plus linear layers only, the convention that reproduces
the FAN paper's numbers.
"""
from typing import Sequence

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

from stl_mm.models.backbones import FAN

#: The official presets without their token-labelling twins (same backbone).
DEFAULT_ARCHS = tuple(name for name in FAN.official_names if not name.endswith('_token'))


class _WithHeads(nn.Module):
    """The official classification model: backbone, class head (and token head)."""

    def __init__(self, backbone: FAN, num_classes: int, token_head: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        self.aux_head = nn.Linear(backbone.num_features, num_classes) if token_head else None

    def forward(self, x: torch.Tensor):
        (cls_feat, patch_map), = self.backbone(x)
        logits = self.head(cls_feat)
        if self.aux_head is None:
            return logits
        return logits, self.aux_head(patch_map.flatten(2).transpose(1, 2))


def count_flops(arch: str, size: Sequence[int], dense: bool, feat_downsample: bool = True,
                num_classes: int = 1000) -> dict:
    """Parameters and FLOPs of one preset at one input size.

    Args:
        arch: FAN preset name (a ``*_token`` name adds the token head).
        size: Input (height, width).
        dense: Count the dense backbone (no heads) instead of the classifier.
        feat_downsample: Dense hybrids: the stride-32 conv on the last level.
        num_classes: Classes of the classification heads.

    Returns:
        ``arch``, ``backbone_params``, ``model_params``, ``flops`` (all ops),
        ``conv_linear_flops`` and, for dense backbones, ``dense_channels`` / ``dense_strides``.
    """
    backbone = FAN(arch, dense=dense, feat_downsample=feat_downsample).eval()
    model = backbone if dense else _WithHeads(backbone, num_classes, arch.endswith('_token'))
    analyzer = FlopAnalyzer(model.eval(), torch.zeros(1, 3, *size))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        by_operator = analyzer.by_operator()
    return dict(arch=arch,
                backbone_params=sum(p.numel() for p in backbone.parameters()),
                model_params=sum(p.numel() for p in model.parameters()),
                flops=sum(by_operator.values()),
                conv_linear_flops=by_operator['conv'] + by_operator['linear'],
                dense_channels=backbone.dense_channels if dense else None,
                dense_strides=backbone.dense_strides if dense else None)


MARKDOWN_HEADER = ('| preset | params (M) | model params (M) | GFLOPs | GFLOPs conv+linear |\n'
                   '| --- | ---: | ---: | ---: | ---: |')


def markdown_row(result: dict) -> str:
    """One row of the docs/presets.md table from a :func:`count_flops` result."""
    return (f"| {result['arch']} | {result['backbone_params'] / 1e6:.2f} | "
            f"{result['model_params'] / 1e6:.2f} | {result['flops'] / 1e9:.2f} | "
            f"{result['conv_linear_flops'] / 1e9:.2f} |")
