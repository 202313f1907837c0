"""torch.compile of FAN on CPU: no graph breaks, and compiled outputs match eager mode.

A graph break inside a block splits it into compiled pieces with Python glue in between,
which costs speed in training; ``fullgraph=True`` turns any break into an error. Inductor
code generation is slow on a CPU, so it compiles one FAN block plus the class-attention
head; the whole backbone and the backward pass are traced by Dynamo / AOTAutograd
(``aot_eager``), which finds the same graph breaks without generating code.
"""
from typing import Tuple

import pytest
import torch
import torch.nn as nn

from stl_mm.models.backbones import FAN

TINY_HYBRID = dict(embed_dims=32, depth=2, num_heads=2,
                   hybrid_stem=dict(depths=[1, 1], dims=[8, 16]))
TINY_SE = dict(embed_dims=32, depth=1, num_heads=2, patch_size=16, se_mlp=True)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _tiny_backbone(arch: dict) -> FAN:
    torch.manual_seed(0)
    model = FAN(arch)
    model.init_weights()
    return model.eval()


def _block_input(model: FAN, image_size: int = 64) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Tokens and grid entering the first FAN block, for a random image."""
    image = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        tokens, hw, _ = model.patch_embed(image)
        tokens = tokens + model.pos_embed(hw)
    return tokens, hw


class BlockAndHead(nn.Module):
    """One FAN block, then the class token, the class-attention blocks and the final norm."""

    def __init__(self, model: FAN) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        tokens = self.model.blocks[0](tokens, hw)
        return self.model.norm(self.model._class_attention(tokens))


def test_inductor_block_and_class_attention_match_eager():
    model = _tiny_backbone(TINY_HYBRID)
    tokens, hw = _block_input(model)
    part = BlockAndHead(model)
    compiled = torch.compile(part, backend='inductor', fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(tokens, hw), part(tokens, hw), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('arch', [TINY_HYBRID, TINY_SE], ids=['hybrid', 'vit-se-mlp'])
def test_whole_backbone_traces_as_one_graph_and_matches_eager(arch):
    model = _tiny_backbone(arch)
    image = torch.randn(2, 3, 64, 64)
    explanation = torch._dynamo.explain(model)(image)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    with torch.no_grad():
        (cls_eager, map_eager), = model(image)
        (cls_compiled, map_compiled), = compiled(image)
    torch.testing.assert_close(cls_compiled, cls_eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(map_compiled, map_eager, rtol=1e-5, atol=1e-5)


def test_block_backward_compiles_and_matches_eager_gradients():
    model = _tiny_backbone(TINY_HYBRID).train()
    tokens, hw = _block_input(model)
    block = model.blocks[0]
    compiled = torch.compile(block, backend='aot_eager', fullgraph=True)
    eager_tokens = tokens.clone().requires_grad_()
    compiled_tokens = tokens.clone().requires_grad_()
    # BatchNorm in train mode normalises with batch statistics, so both calls compute the
    # same function even though each updates the running statistics.
    block(eager_tokens, hw).square().sum().backward()
    compiled(compiled_tokens, hw).square().sum().backward()
    torch.testing.assert_close(compiled_tokens.grad, eager_tokens.grad, rtol=1e-4, atol=1e-5)
