"""torch.compile of FAN on CPU: the blocks compile as single graphs and match eager mode.

A graph break inside a block would split it into several compiled pieces with Python glue in
between, which costs speed in training; ``fullgraph=True`` turns any break into an error.
Tiny model and input so that compiling stays within seconds on a CPU.
"""
import pytest
import torch

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


def _block_input(model: FAN, image_size: int = 64):
    """Tokens and grid entering the first FAN block, for a random image."""
    image = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        tokens, hw, _ = model.patch_embed(image)
        tokens = tokens + model.pos_embed(hw)
    return tokens, hw


@pytest.mark.parametrize('arch', [TINY_HYBRID, TINY_SE], ids=['channel-processing', 'se-mlp'])
def test_fan_block_compiles_without_graph_breaks(arch):
    model = _tiny_backbone(arch)
    tokens, hw = _block_input(model)
    block = model.blocks[0]
    compiled = torch.compile(block, backend='inductor', fullgraph=True)
    with torch.no_grad():
        expected, expected_hw = block(tokens, hw)
        actual, actual_hw = compiled(tokens, hw)
    assert actual_hw == expected_hw
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_class_attention_block_compiles_without_graph_breaks():
    model = _tiny_backbone(TINY_HYBRID)
    tokens, _ = _block_input(model)
    tokens = torch.cat([model.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
    block = model.cls_attn_blocks[0]
    compiled = torch.compile(block, backend='inductor', fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(tokens), block(tokens), rtol=1e-4, atol=1e-5)


def test_block_backward_compiles_and_matches_eager_gradients():
    model = _tiny_backbone(TINY_HYBRID).train()
    tokens, hw = _block_input(model)
    block = model.blocks[0]
    compiled = torch.compile(block, backend='aot_eager', fullgraph=True)
    eager_tokens = tokens.clone().requires_grad_()
    compiled_tokens = tokens.clone().requires_grad_()
    # BatchNorm in train mode updates running stats on each call; the outputs do not depend
    # on them, so two calls see the same function.
    block(eager_tokens, hw)[0].square().sum().backward()
    compiled(compiled_tokens, hw)[0].square().sum().backward()
    torch.testing.assert_close(compiled_tokens.grad, eager_tokens.grad, rtol=1e-4, atol=1e-5)


def test_whole_backbone_has_no_graph_breaks_and_matches_eager():
    model = _tiny_backbone(TINY_HYBRID)
    image = torch.randn(2, 3, 64, 64)
    explanation = torch._dynamo.explain(model)(image)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, backend='inductor')
    with torch.no_grad():
        (cls_eager, map_eager), = model(image)
        (cls_compiled, map_compiled), = compiled(image)
    torch.testing.assert_close(cls_compiled, cls_eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(map_compiled, map_eager, rtol=1e-4, atol=1e-4)
