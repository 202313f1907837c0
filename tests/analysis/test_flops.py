"""stl_mm.analysis.flops: attention MACs are counted, heads and dense levels are reported."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.analysis import FlopAnalyzer

from stl_mm.analysis.flops import count_flops, markdown_row
from stl_mm.compat.flops import sdpa_flop_handle


class _Attention(nn.Module):

    def forward(self, query, key, value):
        return F.scaled_dot_product_attention(query, key, value)


def test_sdpa_handle_counts_both_attention_products():
    query, key, value = torch.zeros(2, 3, 5, 8), torch.zeros(2, 3, 7, 8), torch.zeros(2, 3, 7, 4)
    analyzer = FlopAnalyzer(_Attention(), (query, key, value))
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_handle)
    # q k^T: B h Nq Nk d, then weights v: B h Nq Nk dv
    assert analyzer.total() == 2 * 3 * 5 * 7 * (8 + 4)


def test_classifier_counts_its_heads_and_dense_backbone_its_levels():
    plain = count_flops('fan_tiny_12_p16_224', (32, 32), dense=False, num_classes=10)
    token = count_flops('fan_tiny_8_p4_hybrid_token', (32, 32), dense=False, num_classes=10)
    assert plain['model_params'] - plain['backbone_params'] == 192 * 10 + 10
    assert token['model_params'] - token['backbone_params'] == 2 * (192 * 10 + 10)
    assert 0 < plain['conv_linear_flops'] < plain['flops']
    assert plain['dense_channels'] is None
    dense = count_flops('fan_tiny_8_p4_hybrid', (64, 64), dense=True)
    assert dense['dense_channels'] == (128, 256, 192, 768)
    assert dense['dense_strides'] == (4, 8, 16, 32)
    assert markdown_row(plain).startswith('| fan_tiny_12_p16_224 | ')
