"""Count ``scaled_dot_product_attention`` in mmengine's FLOP counter.

mmengine 0.10.7's ``FlopAnalyzer`` (fvcore's counter) has no handle for
``aten::scaled_dot_product_attention`` and skips it, so FAN's attention products are missing
from every FLOPs figure built on it: stl_mm's own counter (:mod:`stl_mm.analysis.flops`) and the
upstream tools (``get_flops.py`` of mmpretrain, mmsegmentation and mmdetection, which call
``get_model_complexity_info``). Each ``FlopAnalyzer`` starts from the module-level table
``_DEFAULT_SUPPORTED_FLOP_OPS``; we add this one operator to it. Should mmengine ship its own
handle, the table already has the key and it is left alone.
"""
import math
from typing import Any, List

from mmengine.analysis import complexity_analysis
from mmengine.analysis.jit_handles import get_shape

SDPA_OP = 'aten::scaled_dot_product_attention'


def sdpa_flop_handle(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of softmax(q k^T) v for q (B, h, Nq, d), k (B, h, Nk, d), v (B, h, Nk, dv)."""
    q_shape, k_shape, v_shape = (get_shape(value) for value in inputs[:3])
    batch_heads = math.prod(q_shape[:-2])
    return batch_heads * q_shape[-2] * k_shape[-2] * (q_shape[-1] + v_shape[-1])


complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.setdefault(SDPA_OP, sdpa_flop_handle)
