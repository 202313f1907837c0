"""stl_mm.compat.flops and stl_mm.compat.upstream_tools: attention in mmengine's FLOP counter;
the tool fixes touch only the tools they are for."""
import subprocess
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.analysis import FlopAnalyzer

import stl_mm  # noqa: F401


class _Attention(nn.Module):

    def forward(self, query, key, value):
        return F.scaled_dot_product_attention(query, key, value)


def test_flop_analyzer_counts_attention_by_default():
    """Without the handle among mmengine's defaults the count was 0."""
    query, key, value = torch.zeros(2, 3, 5, 8), torch.zeros(2, 3, 7, 8), torch.zeros(2, 3, 7, 4)
    analyzer = FlopAnalyzer(_Attention(), (query, key, value))
    assert analyzer.total() == 2 * 3 * 5 * 7 * (8 + 4)


def test_a_script_that_is_not_the_upstream_tool_is_left_alone(tmp_path):
    """A script named like mmseg's get_flops.py that did not import mmseg's BaseSegmentor."""
    script = tmp_path / 'analysis_tools' / 'get_flops.py'
    script.parent.mkdir()
    script.write_text(
        'from mmengine.analysis import get_model_complexity_info\n'
        'original = get_model_complexity_info\n'
        'import stl_mm\n'
        'print(get_model_complexity_info is original)\n')
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.split() == ['True'], result.stderr[-2000:]
