"""stl_mm.visualization.attention and the attention weights of FAN's attention modules."""
import matplotlib.image
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from stl_mm.apis.token_labeler import load_image_files
from stl_mm.models.backbones import FAN
from stl_mm.models.backbones.fan_layers import ClassAttention, TokenMixing
from stl_mm.visualization import attention as attention_module
from stl_mm.visualization.attention import (AttentionWeights, class_attention_map,
                                            collect_attention, draw_attention_figure,
                                            query_token, token_mixing_map)

TINY_VIT = dict(embed_dims=32, depth=2, num_heads=4, mlp_ratio=2., patch_size=4,
                cls_attn_layers=1)
TINY_HYBRID = dict(embed_dims=32, depth=2, num_heads=2, cls_attn_layers=1,
                   hybrid_stem=dict(depths=[1, 1], dims=[8, 16]))


def tiny_fan(arch: dict) -> FAN:
    torch.manual_seed(0)
    fan = FAN(arch=arch)
    fan.init_weights()
    return fan.eval()


@pytest.mark.parametrize('module, queries', [(TokenMixing(32, 4), 10), (ClassAttention(32, 4), 1)])
def test_attention_weights_rebuild_the_forward(module, queries):
    torch.manual_seed(0)
    module.eval()
    x = torch.randn(2, 10, 32)
    weights = module.attention_weights(x)
    assert weights.shape == (2, 4, queries, 10)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 4, queries), atol=1e-6)
    # The weights are the ones scaled_dot_product_attention applies: weights @ v, merged and
    # projected, is the module's output.
    _, _, values = module.queries_keys_values(x)
    with torch.no_grad():
        assert torch.allclose(module.merge_heads(weights @ values), module(x), atol=1e-6)


@pytest.mark.parametrize('arch, size, grid', [(TINY_VIT, (32, 32), (8, 8)),
                                              (TINY_HYBRID, (64, 48), (4, 3))])
def test_collect_attention_of_a_tiny_fan(arch, size, grid):
    fan = tiny_fan(arch)
    inputs = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = fan(inputs)
    output, maps = collect_attention(fan, inputs, blocks=[0, -1])
    # The hooks only read: the output is the plain forward's, and they are removed.
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    assert all(not block.attn._forward_pre_hooks and not block._forward_pre_hooks
               for block in fan.blocks)
    heads, patches = arch['num_heads'], grid[0] * grid[1]
    assert [m.name for m in maps] == ['blocks.0', 'blocks.1', 'cls_attn_blocks.0']
    assert [m.grid for m in maps] == [grid] * 3
    assert maps[0].weights.shape == (2, heads, patches, patches)
    assert maps[2].weights.shape == (2, heads, 1, 1 + patches)
    for item in maps:
        assert torch.allclose(item.weights.sum(dim=-1), torch.ones(item.weights.shape[:3]),
                              atol=1e-5)
    class_maps = class_attention_map(maps[2])
    assert class_maps.shape == (2, heads, *grid)
    assert not torch.allclose(class_maps[:, 0], class_maps[:, 1])  # the heads differ


def test_token_mixing_views():
    torch.manual_seed(0)
    weights = torch.randn(2, 3, 6, 6).softmax(dim=-1)
    item = AttentionWeights('blocks.0', weights, (2, 3))
    rows = token_mixing_map(item, 'query', torch.tensor([4, 1]))
    assert rows.shape == (2, 3, 2, 3)
    assert torch.equal(rows[0].flatten(1), weights[0, :, 4])
    assert torch.equal(rows[1].flatten(1), weights[1, :, 1])
    received = token_mixing_map(item, 'received')
    assert torch.allclose(received.flatten(2), weights.mean(dim=2))
    assert torch.allclose(received.flatten(2).sum(dim=-1), torch.ones(2, 3))
    with pytest.raises(ValueError, match='--token-mixing must be one of'):
        token_mixing_map(item, 'entropy')


def test_query_pixel_to_patch():
    # (x, y) of a 32 x 48 (H x W) image on a 4 x 6 grid of 8-pixel patches.
    assert query_token((0, 0), (32, 48), (4, 6)) == 0
    assert query_token((47.5, 0), (32, 48), (4, 6)) == 5
    assert query_token((9, 17), (32, 48), (4, 6)) == 2 * 6 + 1
    with pytest.raises(ValueError, match='--query 48 0 lies outside the 48x32 model input'):
        query_token((48, 0), (32, 48), (4, 6))


def test_bad_blocks_and_models_are_refused():
    fan = tiny_fan(TINY_VIT)
    with pytest.raises(IndexError, match=r'--blocks must be FAN block indices in \[-2, 2\)'):
        collect_attention(fan, torch.randn(1, 3, 32, 32), blocks=[2])
    with pytest.raises(TypeError, match='need a FAN backbone; this model has a Linear'):
        collect_attention(nn.Linear(2, 2), torch.randn(1, 2))


def test_figure_has_a_panel_per_row_and_head(tmp_path, monkeypatch):
    panels = []

    def counting_save(figure, out_file, title=None):
        panels.append(sum(axis.get_visible() for axis in figure.axes))
        return save(figure, out_file, title)

    save = attention_module.save_figure
    monkeypatch.setattr(attention_module, 'save_figure', counting_save)
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    maps = torch.rand(4, 8, 8)
    rows = [('blocks.1', maps, (12., 20.)), ('cls_attn_blocks.0', maps, None)]
    labels = (torch.rand(8, 8) > 0.5, 'token labels: Coat')
    out = draw_attention_figure(image, rows, str(tmp_path / 'a.png'), heads=[0, 3],
                                token_labels=labels, title='t')
    # Two rows of: image, token labels, mean, head 0, head 3.
    assert panels == [2 * 5]
    assert matplotlib.image.imread(out).shape[:2] == (int(100 * (2 * 2.3 + 0.4)), 5 * 210)
    draw_attention_figure(image, rows, str(tmp_path / 'b.png'))
    assert panels[1] == 2 * (1 + 1 + 4)  # no token labels, all four heads
    with pytest.raises(IndexError, match=r'--heads must lie in \[0, 4\)'):
        draw_attention_figure(image, rows, str(tmp_path / 'c.png'), heads=[4])


def test_image_files_need_a_pipeline_that_reads_files(tmp_path):
    cfg = Config(dict(test_dataloader=dict(dataset=dict(pipeline=[dict(type='PackInputs')]))))
    (tmp_path / 'x.png').write_bytes(b'')
    with pytest.raises(ValueError, match='cannot read image files'):
        load_image_files(cfg, [str(tmp_path / 'x.png')])
    with pytest.raises(FileNotFoundError, match='No such image file: .*missing.png'):
        load_image_files(cfg, [str(tmp_path / 'missing.png')])
