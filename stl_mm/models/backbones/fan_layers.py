"""Building blocks of Fully Attentional Networks (FAN, Zhou et al., ICML 2022).

The modules reproduce the official NVlabs implementation function for function, and their
parameter names follow the official (timm-style) names, so that official checkpoints load
with nothing renamed but the few legacy names handled in :mod:`.fan_checkpoint`.

Reading order: positional encoding, patch embeddings (convolutional and hybrid ConvNeXt stem),
token mixing, channel processing, the FAN block, and the class-attention block.

A few official details look surprising but are kept because published weights depend on them;
each is marked with a comment where it happens.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from torch.utils.checkpoint import checkpoint

HW = Tuple[int, int]


def capturing_graph() -> bool:
    """Whether this forward pass is being recorded into a graph instead of just run.

    ``torch.jit.trace`` / ``torch.jit.script``, the ONNX exporters, ``torch.export`` and
    ``torch.compile`` record Python-side decisions as constants of the graph. Eager-only
    shortcuts that pick a path or a split from the input's shape must be skipped then, or the
    recorded graph only works for the example's shape (e.g. a fixed batch size).
    """
    if torch.jit.is_scripting():
        return True
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def tokens_to_map(tokens: torch.Tensor, hw: HW) -> torch.Tensor:
    """(N, H*W, C) tokens -> (N, C, H, W) map."""
    batch, _, channels = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, channels, hw[0], hw[1])


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) map -> (N, H*W, C) tokens."""
    return feature_map.flatten(2).transpose(1, 2)


class FourierPositionalEncoding(nn.Module):
    """Sine/cosine encoding of the token grid, projected to the embedding width.

    Both axes are normalised to (0, 2*pi], so the encoding is computed for whatever grid the
    input produces (non-square inputs, 1024x1024 crops, 800x1344 detection inputs).

    Args:
        embed_dims: Output channels.
        hidden_dim: Frequencies per axis.
        temperature: Base of the frequency progression.
        paired_frequencies: True gives each sin/cos pair one frequency
            (``temperature ** (2 * (i // 2) / hidden_dim)``), as the official classification
            models do. The official detection and segmentation backbones use true division
            there (``temperature ** (i / hidden_dim)``); pass False to reproduce them.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dim: int = 32,
                 temperature: float = 10000.,
                 paired_frequencies: bool = True) -> None:
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, embed_dims, kernel_size=1)
        self.hidden_dim = hidden_dim
        self.temperature = temperature
        self.paired_frequencies = paired_frequencies
        self.eps = 1e-6

    def _axis_encoding(self, length: int, device: torch.device) -> torch.Tensor:
        """(length, hidden_dim) encoding of positions 1..length along one axis."""
        position = torch.arange(1, length + 1, dtype=torch.float32, device=device)
        position = position / (length + self.eps) * (2 * math.pi)
        index = torch.arange(self.hidden_dim, dtype=torch.float32, device=device)
        if self.paired_frequencies:
            index = torch.div(index, 2, rounding_mode='floor') * 2
        frequency = self.temperature**(index / self.hidden_dim)
        angle = position[:, None] / frequency
        # Interleave sin of even and cos of odd channels: [sin0, cos1, sin2, cos3, ...].
        return torch.stack([angle[:, 0::2].sin(), angle[:, 1::2].cos()], dim=-1).flatten(1)

    def forward(self, hw: HW) -> torch.Tensor:
        """Returns the (1, H*W, embed_dims) encoding of an H x W grid."""
        height, width = hw
        weight = self.token_projection.weight
        pos_y = self._axis_encoding(height, weight.device)[:, None, :].expand(-1, width, -1)
        pos_x = self._axis_encoding(width, weight.device)[None, :, :].expand(height, -1, -1)
        encoding = torch.cat([pos_y, pos_x], dim=-1).reshape(1, height * width, -1)
        # The 1x1 convolution is a linear map over channels.
        return F.linear(encoding.to(weight.dtype), weight.flatten(1), self.token_projection.bias)


class ConvPatchEmbed(nn.Module):
    """FAN-ViT patch embedding: stride-2 3x3 conv + BN layers with GELU in between.

    Patch size 16 uses four convolutions (widths C/8, C/4, C/2, C), 8 uses three (C/4, C/2, C)
    and 4 uses two (C/4, C).
    """
    _WIDTH_DIVISORS = {16: (8, 4, 2, 1), 8: (4, 2, 1), 4: (4, 1)}

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 patch_size: int = 16,
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        if patch_size not in self._WIDTH_DIVISORS:
            raise ValueError(f'FAN ConvPatchEmbed supports patch_size 4, 8 or 16, got '
                             f'{patch_size}.')
        self.patch_size = patch_size
        layers: List[nn.Module] = []
        channels = in_channels
        for divisor in self._WIDTH_DIVISORS[patch_size]:
            if layers:
                layers.append(nn.GELU())
            out_channels = embed_dims // divisor
            layers.append(
                nn.Sequential(
                    nn.Conv2d(channels, out_channels, 3, stride=2, padding=1, bias=False),
                    build_norm_layer(norm_cfg, out_channels)[1]))
            channels = out_channels
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, HW, List[torch.Tensor]]:
        x = self.proj(x)
        return map_to_tokens(x), (x.shape[2], x.shape[3]), []


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map.

    Args:
        num_channels: Channels.
        eps: Added to the variance.
        unbiased: Normalise with the unbiased variance (divisor C - 1). The official ConvNeXt
            stem picks the variance by memory layout: ``F.layer_norm`` (biased) for contiguous
            inputs, ``var_mean`` (unbiased) otherwise. Only its first norm sees a contiguous
            map; every later norm gets the channels-last view the previous norm returns, so
            the published hybrid weights were trained with unbiased variance there.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, unbiased: bool = False) -> None:
        super().__init__(num_channels, eps=eps)
        self.unbiased = unbiased

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_channels_last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise an (N, H, W, C) map over its last dimension."""
        if not self.unbiased:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        # (x - m) / sqrt(var * C / (C - 1) + eps) equals sqrt((C - 1) / C) * (x - m) /
        # sqrt(var + eps * (C - 1) / C): the fused kernel (float32 statistics, also for half
        # inputs) computes the unbiased norm with a rescaled weight and eps.
        channels = self.normalized_shape[0]
        ratio = (channels - 1) / channels
        return F.layer_norm(x, self.normalized_shape, self.weight * math.sqrt(ratio), self.bias,
                            self.eps * ratio)


class ConvMlp(nn.Module):
    """MLP of the ConvNeXt block, applied to a channels-last (N, H, W, C) map.

    The layers keep the official 1x1-conv parameters (``fc1`` / ``fc2``), but run as linear
    layers over the last dimension: one GEMM each, where a 1x1 conv on CPU may take a slow
    im2col path (single-threaded, batch < 16).
    """
    #: Without autograd on CPU, the rows are processed in chunks whose hidden activations
    #: hold about this many elements (4 MB in float32), so they stay in cache. Not when the
    #: forward pass is recorded (:func:`capturing_graph`): the number of chunks follows the
    #: batch size, so a recorded split would fix the batch size of the graph.
    cpu_inference_chunk_elements = 2**20

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden_channels, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != 'cpu' or capturing_graph():
            return self._mlp(x)
        # The hidden map of a whole stride-4 batch is tens of MB: written to and read back
        # from memory, it cost as much as the GEMMs (a teacher or test forward on CPU runs
        # this MLP 2x faster in chunks). Rows are independent, so the result is the same.
        rows = max(1, self.cpu_inference_chunk_elements // self.fc1.out_channels)
        flat = x.reshape(-1, x.shape[-1])
        out = torch.cat([self._mlp(chunk) for chunk in flat.split(rows)])
        return out.view(*x.shape[:-1], out.shape[-1])

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(F.linear(x, self.fc1.weight.flatten(1), self.fc1.bias))
        return F.linear(x, self.fc2.weight.flatten(1), self.fc2.bias)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: 7x7 depthwise conv, LayerNorm, 1x1-conv MLP, layer scale, residual.

    Norm and MLP work on the channels-last view of the depthwise conv's output. The official
    hybrid stem uses no stochastic depth. ``with_cp`` recomputes the block in the backward
    pass instead of keeping its activations (the 4x-wide MLP maps at stride 4 and 8).
    """

    def __init__(self,
                 channels: int,
                 layer_scale_init: float = 1e-6,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.conv_dw = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels, unbiased=True)
        self.mlp = ConvMlp(channels, 4 * channels)
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.norm.forward_channels_last(self.conv_dw(x).permute(0, 2, 3, 1)))
        return x + (out * self.gamma).permute(0, 3, 1, 2)


class ConvNeXtStage(nn.Module):
    """A ConvNeXt stage; every stage but the first starts with a LayerNorm + 2x2 stride-2 conv."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 depth: int,
                 downsample: bool,
                 with_cp: bool = False) -> None:
        super().__init__()
        if downsample or in_channels != out_channels:
            self.downsample = nn.Sequential(
                LayerNorm2d(in_channels, unbiased=True),
                nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[ConvNeXtBlock(out_channels, with_cp=with_cp) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXtStem(nn.Module):
    """The first ConvNeXt stages that FAN-Hybrid uses as its convolutional stem.

    A 4x4 stride-4 patchify conv, then one stage per entry of ``depths`` (the first at stride
    4, each later one halving the resolution).

    Args:
        in_channels: Image channels.
        depths: Blocks per stage.
        dims: Channels per stage; entries past ``len(depths)`` are ignored, as officially.
        with_cp: Activation checkpointing of every block.
    """

    def __init__(self,
                 in_channels: int,
                 depths: Sequence[int],
                 dims: Sequence[int],
                 with_cp: bool = False) -> None:
        super().__init__()
        if len(dims) < len(depths):
            raise ValueError(f'hybrid_stem needs one width per stage: depths={list(depths)}, '
                             f'dims={list(dims)}.')
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0]))
        self.stages = nn.Sequential(*[
            ConvNeXtStage(dims[max(i - 1, 0)], dims[i], depth, downsample=i > 0, with_cp=with_cp)
            for i, depth in enumerate(depths)
        ])
        self.out_channels = [int(dims[i]) for i in range(len(depths))]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Returns the output map of every stage (strides 4, 8, ...), in channels-last memory."""
        # In channels-last memory every norm and MLP reads its (N, H, W, C) view without a
        # copy, and the depthwise convs take the fast oneDNN / cuDNN NHWC kernels.
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class HybridPatchEmbed(nn.Module):
    """FAN-Hybrid patch embedding: ConvNeXt stem, then a 2x2 stride-2 conv to the token width.

    Official name of the stem is ``backbone``; it is kept so checkpoints load unchanged.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 depths: Sequence[int],
                 dims: Sequence[int],
                 with_cp: bool = False) -> None:
        super().__init__()
        self.backbone = ConvNeXtStem(in_channels, depths, dims, with_cp)
        self.proj = nn.Conv2d(self.backbone.out_channels[-1], embed_dims, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, HW, List[torch.Tensor]]:
        stem_maps = self.backbone(x)
        x = self.proj(stem_maps[-1])
        return map_to_tokens(x), (x.shape[2], x.shape[3]), stem_maps


class _HeadedAttention(nn.Module):
    """What token mixing and class attention share: the ``q`` and output projections, the
    split into heads, and ``scaled_dot_product_attention``.

    Subclasses build their key / value projections in :meth:`build_key_value`, which runs
    between ``q`` and ``proj`` so that the modules keep the official order (the order the
    official initialisation draws their random weights in), and say which tokens are queries
    in :meth:`queries_keys_values`.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}.')
        self.num_heads = num_heads
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.build_key_value(embed_dims, qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def build_key_value(self, embed_dims: int, qkv_bias: bool) -> None:
        """Create the key / value projections."""
        raise NotImplementedError

    def split_heads(self, x: torch.Tensor, parts: int = 1) -> torch.Tensor:
        """(N, L, parts * C) -> (parts, N, heads, L, C / heads), or without the first axis."""
        batch, length, channels = x.shape
        x = x.reshape(batch, length, parts, self.num_heads, channels // parts // self.num_heads)
        x = x.permute(2, 0, 3, 1, 4)
        return x[0] if parts == 1 else x

    def queries_keys_values(
            self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head queries (N, heads, Lq, d), keys and values (N, heads, L, d) of ``x``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) v over the heads, merged and projected: (N, Lq, C)."""
        q, k, v = self.queries_keys_values(x)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        return self.merge_heads(out)

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(N, heads, Lq, d) per-head outputs -> the projected (N, Lq, C) output."""
        return self.proj_drop(self.proj(out.transpose(1, 2).flatten(2)))

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax(q k^T / sqrt(d)) weights (N, heads, Lq, L) that :meth:`forward` uses.

        ``scaled_dot_product_attention`` never materialises them, so they are recomputed here
        from the same queries and keys, for inspection only (the attention visualiser,
        :mod:`stl_mm.visualization.attention`); every row sums to 1. Without attention
        dropout, ``merge_heads(attention_weights(x) @ v)`` is ``forward(x)``.
        """
        q, k, _ = self.queries_keys_values(x)
        scores = q @ k.transpose(-2, -1) * q.shape[-1]**-0.5
        return scores.float().softmax(dim=-1)


class TokenMixing(_HeadedAttention):
    """Multi-head self-attention over the tokens (official ``TokenMixing``).

    Separate ``q`` and fused ``kv`` projections, as in the official weights; the attention is
    the standard softmax(q k^T / sqrt(d)) v, computed with ``scaled_dot_product_attention``.
    """

    def build_key_value(self, embed_dims: int, qkv_bias: bool) -> None:
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)

    def queries_keys_values(
            self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every token is a query: (N, heads, L, d) each."""
        # unbind, not tuple unpacking: iterating a tensor is a TracerWarning in torch.jit.trace.
        k, v = self.split_heads(self.kv(x), parts=2).unbind(0)
        return self.split_heads(self.q(x)), k, v


class DWConv(nn.Module):
    """Depthwise 3x3 conv, GELU, BatchNorm, depthwise 3x3 conv, on tokens laid out as a grid."""

    def __init__(self, channels: int, norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.act = nn.GELU()
        self.bn = build_norm_layer(norm_cfg, channels)[1]
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        x = tokens_to_map(x, hw)
        x = self.conv2(self.bn(self.act(self.conv1(x))))
        return map_to_tokens(x)


class ConvFFN(nn.Module):
    """Token-wise MLP with a depthwise-conv residual branch (official ``Mlp``).

    ``fc1 -> h + gamma * DWConv(h) -> fc2``. The official module creates a GELU but never
    applies it; the only non-linearity is the one inside :class:`DWConv`.
    """

    def __init__(self,
                 in_channels: int,
                 hidden_channels: int,
                 drop: float = 0.,
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden_channels)
        self.dwconv = DWConv(hidden_channels, norm_cfg)
        self.gamma = nn.Parameter(torch.ones(hidden_channels))
        self.fc2 = nn.Linear(hidden_channels, in_channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        x = self.fc1(x)
        x = x + self.drop(self.gamma * self.dwconv(x, hw))
        return self.drop(self.fc2(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation on an (N, C, H, W) map: mean pool, reduce, ReLU, expand, sigmoid."""

    def __init__(self, channels: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        reduced = max(1, int(channels * se_ratio + 0.5))
        self.conv_reduce = nn.Conv2d(channels, reduced, kernel_size=1)
        self.act1 = nn.ReLU()
        self.conv_expand = nn.Conv2d(reduced, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


class SEConvFFN(ConvFFN):
    """:class:`ConvFFN` followed by squeeze-and-excitation over the token grid (FAN SE-MLP)."""

    def __init__(self,
                 in_channels: int,
                 hidden_channels: int,
                 drop: float = 0.,
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__(in_channels, hidden_channels, drop, norm_cfg)
        self.se = SqueezeExcite(in_channels)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        x = super().forward(x, hw)
        return map_to_tokens(self.se(tokens_to_map(x, hw)))


class ChannelProcessing(nn.Module):
    """FAN's attentional channel processing (official ``ChannelProcessing``).

    Not a softmax attention: per head, queries (a linear map of the tokens) and keys (the
    tokens themselves) are softmax-normalised over the tokens; the keys are averaged over the
    head's channels; their inner product over tokens gives one score per channel, squashed
    with a sigmoid and scaled by a learned per-head temperature. The scores then gate, channel
    by channel, the values: the tokens passed through a :class:`ConvFFN` and a LayerNorm.

    Args:
        embed_dims: Token width.
        num_heads: Channel groups that share a key.
        mlp_ratio: Hidden width of the value MLP relative to ``embed_dims``.
        qkv_bias: Bias of the query projection.
        attn_drop: Dropout on the channel scores.
        drop: Dropout inside the value MLP.
        norm_cfg: Norm of the depthwise conv in the value MLP.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 drop: float = 0.,
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by the channel heads '
                             f'{num_heads}.')
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.mlp_v = ConvFFN(embed_dims, int(embed_dims * mlp_ratio), drop, norm_cfg)
        # Officially created with nn.LayerNorm's default eps (1e-5), unlike the block norms.
        self.norm_v = nn.LayerNorm(embed_dims)
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)

    def channel_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, C) gate of every channel."""
        batch, num_tokens, channels = x.shape
        head_shape = (batch, num_tokens, self.num_heads, channels // self.num_heads)
        query = self.q(x).reshape(head_shape).softmax(dim=1)
        key = x.reshape(head_shape).softmax(dim=1).mean(dim=-1)
        scores = torch.einsum('bnhc,bnh->bhc', query, key).sigmoid()
        scores = scores * self.temperature.reshape(1, self.num_heads, 1)
        return self.attn_drop(scores.reshape(batch, 1, channels))

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        values = self.norm_v(self.mlp_v(x, hw))
        return self.channel_scores(x) * values


class OverlapDownsample(nn.Module):
    """3x3 stride-2 conv + LayerNorm that changes the token width inside the block stack.

    Used by the XLarge hybrid (official ``OverlapPatchEmbed``); halves the grid.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        # Officially nn.LayerNorm's default eps (1e-5).
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        """Tokens of an (H, W) grid -> tokens of the :meth:`output_grid`, ``out_channels`` wide."""
        return self.norm(map_to_tokens(self.proj(tokens_to_map(x, hw))))

    def output_grid(self, hw: HW) -> HW:
        """The (H', W') grid that :meth:`forward` produces from an (H, W) grid."""
        conv = self.proj
        return tuple((side + 2 * pad - kernel) // stride + 1 for side, pad, kernel, stride in zip(
            hw, conv.padding, conv.kernel_size, conv.stride))


class FANBlock(nn.Module):
    """FAN block: token mixing, then channel processing (or SE-MLP), each with layer scale.

    Args:
        embed_dims: Token width.
        num_heads: Heads of the token-mixing attention.
        mlp_ratio: Hidden width ratio of the channel MLP.
        qkv_bias: Biases of the query/key/value projections.
        drop: Dropout after projections and inside the MLPs.
        attn_drop: Dropout on attention weights and channel scores.
        drop_path: Stochastic depth rate of both residual branches.
        eta: Initial layer-scale value.
        se_mlp: Use the SE-MLP (:class:`SEConvFFN`) instead of channel processing.
        channel_heads: Heads of channel processing; defaults to ``num_heads``.
        out_dims: If given and different from ``embed_dims``, an :class:`OverlapDownsample`
            to this width follows the block.
        norm_cfg: Norm of the depthwise convolutions.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 eta: float = 1.,
                 se_mlp: bool = False,
                 channel_heads: Optional[int] = None,
                 out_dims: Optional[int] = None,
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = TokenMixing(embed_dims, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        if se_mlp:
            self.mlp = SEConvFFN(embed_dims, int(embed_dims * mlp_ratio), drop, norm_cfg)
        else:
            self.mlp = ChannelProcessing(embed_dims, channel_heads or num_heads, mlp_ratio,
                                         qkv_bias, attn_drop, drop, norm_cfg)
        self.gamma1 = nn.Parameter(eta * torch.ones(embed_dims))
        self.gamma2 = nn.Parameter(eta * torch.ones(embed_dims))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if out_dims is not None and out_dims != embed_dims:
            self.downsample = OverlapDownsample(embed_dims, out_dims)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        """(N, H*W, C) tokens of an H x W grid -> the block's output tokens.

        Only tokens are returned, so that forward hooks (Grad-CAM target layers, feature
        extraction) see a tensor; the output grid, smaller after a downsample, is
        :meth:`output_grid`.
        """
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x), hw))
        if self.downsample is not None:
            x = self.downsample(x, hw)
        return x

    def output_grid(self, hw: HW) -> HW:
        """The grid of the tokens :meth:`forward` returns for an (H, W) input grid."""
        return hw if self.downsample is None else self.downsample.output_grid(hw)


class ClassAttention(_HeadedAttention):
    """Attention of the class token (the first token) over all tokens, as in CaiT."""

    def build_key_value(self, embed_dims: int, qkv_bias: bool) -> None:
        self.k = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.v = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)

    def queries_keys_values(
            self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The class token is the only query: (N, heads, 1, d); keys and values of all tokens.

        So :meth:`forward` returns the (N, 1, C) update of the class token.
        """
        return (self.split_heads(self.q(x[:, :1])), self.split_heads(self.k(x)),
                self.split_heads(self.v(x)))


class Mlp(nn.Module):
    """Linear, GELU, Linear (with dropout), for the class token."""

    def __init__(self, in_channels: int, hidden_channels: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_channels, in_channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ClassAttentionBlock(nn.Module):
    """Class-attention block (CaiT / XCiT style) with the official FAN token handling.

    The class token attends to all tokens and then passes through an MLP. As in the official
    code, the patch tokens take the residual ``x + gamma1 * norm1(x)`` in the attention step
    and are added to themselves in the MLP step; with ``tokens_norm`` they are also
    normalised by ``norm2``. Published weights were trained with exactly this.

    Args:
        embed_dims: Token width.
        num_heads: Attention heads.
        mlp_ratio: Hidden width ratio of the class-token MLP.
        qkv_bias: Biases of the query/key/value projections.
        drop: Dropout after projections and in the MLP.
        attn_drop: Dropout on attention weights.
        eta: Initial layer-scale value.
        tokens_norm: Apply ``norm2`` to all tokens instead of the class token only.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 eta: float = 1.,
                 tokens_norm: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = ClassAttention(embed_dims, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop)
        self.gamma1 = nn.Parameter(eta * torch.ones(embed_dims))
        self.gamma2 = nn.Parameter(eta * torch.ones(embed_dims))
        self.tokens_norm = tokens_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        x = x + self.gamma1 * torch.cat([self.attn(x_norm), x_norm[:, 1:]], dim=1)
        if self.tokens_norm:
            x = self.norm2(x)
        else:
            x = torch.cat([self.norm2(x[:, :1]), x[:, 1:]], dim=1)
        cls_token = x[:, :1] + self.gamma2 * self.mlp(x[:, :1])
        return torch.cat([cls_token, 2 * x[:, 1:]], dim=1)
