"""FAN backbone for mmpretrain, mmsegmentation and mmdetection.

One class, :class:`FAN`, covers the FAN-ViT and FAN-Hybrid families of `Understanding The
Robustness in Vision Transformers` (Zhou et al., ICML 2022) and the token-labelling variants
of STL (Zhao et al., ICCV 2023). It reproduces the official NVlabs models exactly and loads
their checkpoints (see :mod:`.fan_checkpoint`).

Classification (``dense=False``) returns ``((cls_feat, patch_map),)``, both after the final
norm. Dense prediction (``dense=True``) returns NCHW maps, following the official detection
and segmentation backbones:

=================  ===============================================================
family             levels (``out_indices`` picks among them, default all)
=================  ===============================================================
FAN-Hybrid         stem stage 1 (stride 4), stem stage 2 (stride 8), tokens after
                   block ``dense_blocks[0]`` (stride 16), final tokens after the
                   class-attention blocks: through the learnable stride-2 conv
                   (stride 32, ``downsample_channels`` = 768) when
                   ``feat_downsample=True`` (detection), else kept at stride 16
                   with the embedding width (segmentation).
FAN-ViT            tokens after blocks 4, 7, 11 and the final tokens after the
                   class-attention blocks, all at stride 16 with the embedding width.
=================  ===============================================================

Channels per preset (also ``FAN(arch, dense=True).dense_channels``; docs/presets.md):

=========================================  ==================  =====================
preset (aliases)                           feat_downsample=True feat_downsample=False
=========================================  ==================  =====================
fan_tiny_8_p4_hybrid (t-hybrid)            128, 256, 192, 768  128, 256, 192, 192
fan_small_12_p4_hybrid (s-hybrid)          128, 256, 384, 768  128, 256, 384, 384
fan_base_16_p4_hybrid (b-hybrid)           128, 256, 448, 768  128, 256, 448, 448
fan_large_16_p4_hybrid (l-hybrid)          128, 256, 480, 768  128, 256, 480, 480
fan_Xlarge_16_p4_hybrid (xl-hybrid)        128, 256, 528, 768  128, 256, 528, 768
fan_tiny_12_p16_224 (tiny)                 192 x 4 (all stride 16)
fan_small_12_p16_224 (small), small-se     384 x 4
fan_base_18_p16_224 (base)                 448 x 4
fan_large_24_p16_224 (large)               480 x 4
=========================================  ==================  =====================

The XLarge hybrid changes width inside its block stack (an overlapping stride-2 conv after
block 19), so its final tokens are already at stride 32 with 768 channels and it has no
extra learnable downsample.

``out_norms=True`` adds STL's detection backbone (NVlabs/STL ``detection/models/fan.py``, the
backbone of its Cascade Mask R-CNN models): a learnable LayerNorm over the channels of each
dense output (``out_norm{level}``, PyTorch's default eps 1e-5, biased variance), applied after
everything else. The FAN repository's detection backbone and both segmentation backbones have
none.
"""
import math
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from torch.nn.modules.batchnorm import _BatchNorm

from stl_mm.registry import register
from . import fan_checkpoint
from .fan_layers import (ClassAttentionBlock, ConvPatchEmbed, FANBlock, FourierPositionalEncoding,
                         HybridPatchEmbed, LayerNorm2d, tokens_to_map)
from .fan_presets import (ARCH_DEFAULTS, ARCH_REQUIRED, ARCH_ZOO, OFFICIAL_DETECTION_NAMES,
                          OFFICIAL_NAMES, resolve_arch)

__all__ = ['FAN', 'ARCH_DEFAULTS', 'ARCH_REQUIRED']


@register()
class FAN(BaseBackbone):
    """Fully Attentional Network backbone (FAN-ViT and FAN-Hybrid).

    Args:
        arch: A preset name or alias (case-insensitive; see :attr:`arch_zoo`, e.g.
            ``'fan_tiny_8_p4_hybrid'``, ``'tiny-hybrid'``, ``'t-hybrid'``, ``'small'``,
            ``'small-se'``; the official detection names ``'fan_base_12_p4_hybrid'`` and
            ``'fan_large_12_p4_hybrid'`` too), or a dict with the keys of :data:`ARCH_DEFAULTS`
            (optional) and :data:`ARCH_REQUIRED` (``embed_dims``, ``depth``, ``num_heads``).
        dense: Return multi-scale NCHW maps for detection/segmentation instead of the
            classification features.
        out_indices: Dense levels to return (see the module docstring); default all.
        dense_blocks: Override the blocks whose tokens are dense outputs (0-based block
            indices; the official hybrid backbones use one, FAN-ViT ``(4, 7, 11)``).
        feat_downsample: Hybrids in dense mode: put the final level through a learnable 3x3
            stride-2 conv (stride 32, official detection) instead of keeping it at stride 16
            with the embedding width (official segmentation).
        downsample_channels: Output channels of that conv (768 officially).
        out_norms: Dense mode: a learnable LayerNorm over the channels of each returned level,
            ``out_norm{level}`` (eps 1e-5), as STL's detection backbone has; the FAN
            repository's detection backbone and the segmentation backbones have none. A
            checkpoint without these keys (e.g. ImageNet weights) leaves them at their unit
            initialisation, and the load report lists them.
        in_channels: Image channels.
        drop_rate: Dropout after the positional encoding, projections and MLPs.
        attn_drop_rate: Dropout on attention weights and channel scores.
        drop_path_rate: Stochastic depth of every FAN block. Officially the same rate for
            all blocks (no linear ramp) and none in the class-attention blocks.
        with_cp: Activation checkpointing of every block: the hybrid stem's ConvNeXt blocks,
            the FAN blocks and the class-attention blocks.
        frozen_stages: -1 or 0 freeze nothing; k >= 1 freezes the patch embedding, the
            positional encoding and the first k blocks; ``depth + 1`` also freezes the
            class token, class-attention blocks and final norm.
        norm_eval: Keep BatchNorm layers in eval mode while training.
        norm_cfg: Norm of the convolutional patch embedding and the depthwise convs
            (``dict(type='SyncBN')`` for multi-GPU dense training).
        paired_fourier_frequencies: Frequency layout of the Fourier positional encoding.
            None follows the official code of each task: paired (sin/cos pairs share a
            frequency) for classification, unpaired for the dense backbones. See
            :class:`~.fan_layers.FourierPositionalEncoding`.
        use_ema: Prefer EMA weights when ``init_cfg`` loads a checkpoint holding both (an
            ``use_ema`` key in ``init_cfg`` overrides this).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, prefix='backbone.')`` loads our
            mmengine checkpoints or official ones (timm layout) through
            :func:`.fan_checkpoint.load_checkpoint`, reporting unused and newly initialised
            keys; anything that does not fit raises. None: official init.
    """
    #: Preset settings by name (:data:`.fan_presets.ARCH_ZOO`).
    arch_zoo: Dict[str, dict] = ARCH_ZOO
    #: The official model names (one per distinct architecture, token variants included).
    official_names = OFFICIAL_NAMES
    #: The official detection-backbone names that differ from the classification name of the
    #: same architecture (detection name -> classification name); both are ``arch`` presets.
    official_detection_names = OFFICIAL_DETECTION_NAMES
    #: eps of the ``out_norms`` LayerNorms (the official code builds them with PyTorch's default).
    out_norm_eps = 1e-5
    #: Tokens ahead of the patch tokens in the output of each block ``blocks[i]`` (an
    #: (N, H*W, C) tensor): none, the class token only joins in the class-attention blocks.
    #: mmpretrain's Grad-CAM tool (``vis_cam.py --vit-like --target-layers backbone.blocks.N``)
    #: reads it to lay a block's tokens out as a map.
    num_extra_tokens = 0

    def __init__(self,
                 arch: Union[str, dict] = 'tiny-hybrid',
                 dense: bool = False,
                 out_indices: Optional[Sequence[int]] = None,
                 dense_blocks: Optional[Sequence[int]] = None,
                 feat_downsample: bool = True,
                 downsample_channels: int = 768,
                 out_norms: bool = False,
                 in_channels: int = 3,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 paired_fourier_frequencies: Optional[bool] = None,
                 use_ema: bool = True,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self.resolve_arch(arch)
        settings = self.arch_settings
        depth = settings['depth']
        widths = settings['embed_dims']
        self.depth = depth
        self.dense = dense
        self.with_cp = with_cp
        self.norm_eval = norm_eval
        self.use_ema = use_ema
        self.is_hybrid = settings['hybrid_stem'] is not None
        self.embed_dims = self.num_features = widths[-1]

        if self.is_hybrid:
            stem = settings['hybrid_stem']
            self.patch_embed = HybridPatchEmbed(in_channels, widths[0], stem['depths'],
                                                stem['dims'], with_cp)
            self.patch_stride = 2 * 4 * 2**(len(stem['depths']) - 1)
        else:
            self.patch_embed = ConvPatchEmbed(in_channels, widths[0], settings['patch_size'],
                                              norm_cfg)
            self.patch_stride = settings['patch_size']
        if paired_fourier_frequencies is None:
            paired_fourier_frequencies = not dense
        self.pos_embed = (
            FourierPositionalEncoding(widths[0], paired_frequencies=paired_fourier_frequencies)
            if settings['use_pos_embed'] else None)
        self.pos_drop = nn.Dropout(drop_rate)

        self.blocks = nn.ModuleList([
            FANBlock(
                widths[i],
                settings['num_heads'][i],
                mlp_ratio=settings['mlp_ratio'],
                qkv_bias=settings['qkv_bias'],
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=drop_path_rate,
                eta=settings['eta'],
                se_mlp=settings['se_mlp'],
                channel_heads=settings['channel_heads'][i],
                out_dims=widths[i + 1] if i + 1 < depth else None,
                norm_cfg=norm_cfg) for i in range(depth)
        ])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.cls_attn_blocks = nn.ModuleList([
            ClassAttentionBlock(
                self.embed_dims,
                settings['num_heads'][-1],
                mlp_ratio=settings['mlp_ratio'],
                qkv_bias=settings['qkv_bias'],
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                eta=settings['eta'],
                tokens_norm=settings['tokens_norm']) for _ in range(settings['cls_attn_layers'])
        ])

        # Stride of the token grid after each block (the XLarge pattern halves it once).
        self._block_strides = []
        stride = self.patch_stride
        for block in self.blocks:
            stride *= 2 if block.downsample is not None else 1
            self._block_strides.append(stride)

        self.learnable_downsample = None
        self.out_norms = out_norms
        if dense:
            self._init_dense_levels(dense_blocks, out_indices, feat_downsample,
                                    downsample_channels)
            if out_norms:
                # Named by level, so a checkpoint of all four levels fits any out_indices.
                for level in self.out_indices:
                    self.add_module(f'out_norm{level}',
                                    LayerNorm2d(self.dense_levels[level][0], self.out_norm_eps))
        else:
            if out_indices is not None or out_norms:
                option = (f'out_indices={out_indices}'
                          if out_indices is not None else 'out_norms=True')
                raise ValueError(f'FAN: {option} is an option of the dense outputs; build with '
                                 'dense=True, or drop it for classification.')
            self.norm = nn.LayerNorm(self.embed_dims, eps=1e-6)
            # One output, the classification features after the class attention.
            self.out_indices = (0, )
            self._stem_outs, self._block_outs, self._final_out = (), {}, 0

        if not -1 <= frozen_stages <= depth + 1:
            raise ValueError(f'frozen_stages must be in [-1, {depth + 1}] for a {depth}-block '
                             f'FAN, got {frozen_stages}.')
        self.frozen_stages = frozen_stages
        self._freeze_stages()
        self.register_load_state_dict_pre_hook(fan_checkpoint.official_keys_pre_hook)

    # ------------------------------------------------------------------ architecture
    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> dict:
        """Preset name or custom dict -> complete settings with per-block lists."""
        return resolve_arch(arch, cls.arch_zoo)

    @classmethod
    def arch_from_official(cls, official_kwargs: dict, hybrid_stem: Optional[dict] = None) -> dict:
        """Custom ``arch`` dict equivalent to the official ``FAN(**official_kwargs)`` class.

        Applies the official class defaults (e.g. ``tokens_norm=False``, 12 heads) for keys
        not given; ``hybrid_stem`` is the ``depths``/``dims`` given to the official ConvNeXt
        stem builder.
        """
        kwargs = dict(official_kwargs)
        depth = kwargs.get('depth', 12)
        arch = dict(
            embed_dims=kwargs.get('channel_dims') or kwargs.get('embed_dim', 768),
            depth=depth,
            num_heads=kwargs.get('num_heads', 12),
            channel_heads=kwargs.get('c_head_num'),
            patch_size=kwargs.get('patch_size', 16),
            mlp_ratio=kwargs.get('mlp_ratio', 4.),
            qkv_bias=kwargs.get('qkv_bias', True),
            se_mlp=kwargs.get('se_mlp', False),
            cls_attn_layers=kwargs.get('cls_attn_layers', 2),
            eta=kwargs.get('eta', 1.),
            tokens_norm=kwargs.get('tokens_norm', False),
            use_pos_embed=kwargs.get('use_pos_embed', True))
        if hybrid_stem is not None:
            arch['hybrid_stem'] = dict(depths=list(hybrid_stem['depths']),
                                       dims=list(hybrid_stem['dims']))
        if 'out_index' in kwargs:
            arch['dense_blocks'] = (kwargs['out_index'], )
        return arch

    def _init_dense_levels(self, dense_blocks: Optional[Sequence[int]],
                           out_indices: Optional[Sequence[int]], feat_downsample: bool,
                           downsample_channels: int) -> None:
        """Dense levels (``dense_levels``), ``out_indices`` and where each output is taken."""
        blocks = tuple(dense_blocks) if dense_blocks is not None else self.arch_settings[
            'dense_blocks']
        if any(not 0 <= index < self.depth for index in blocks) or list(blocks) != sorted(
                set(blocks)):
            raise ValueError(f'dense_blocks {blocks} must be distinct indices of the '
                             f'{self.depth} FAN blocks, in increasing order.')
        self.dense_blocks = blocks
        final_stride = self._block_strides[-1]
        if self.is_hybrid and feat_downsample and final_stride == 16:
            self.learnable_downsample = nn.Conv2d(self.embed_dims, downsample_channels, 3,
                                                  stride=2, padding=1)
        stem_levels = [(c, 4 * 2**i) for i, c in enumerate(self.patch_embed.backbone.out_channels)
                       ] if self.is_hybrid else []
        widths = self.arch_settings['embed_dims']
        # A block that changes width ends with its downsample, so it outputs the next width.
        block_levels = [(widths[min(i + 1, self.depth - 1)], self._block_strides[i])
                        for i in blocks]
        final_level = ((downsample_channels, 2 * final_stride) if self.learnable_downsample
                       is not None else (self.embed_dims, final_stride))
        levels = stem_levels + block_levels + [final_level]
        self.dense_levels: List[Tuple[int, int]] = levels
        if out_indices is None:
            out_indices = range(len(levels))
        out_indices = [i + len(levels) if i < 0 else i for i in out_indices]
        if not out_indices or any(not 0 <= i < len(levels) for i in out_indices):
            raise ValueError(f'out_indices {list(out_indices)} must pick among the '
                             f'{len(levels)} dense levels (channels, stride) {levels}.')
        self.out_indices = tuple(out_indices)
        # The stem levels to return, the level of each returned block output, the final level.
        wanted = set(self.out_indices)
        self._stem_outs = tuple(i for i in range(len(stem_levels)) if i in wanted)
        self._block_outs = {block: level for level, block in enumerate(blocks, len(stem_levels))
                            if level in wanted}
        self._final_out = len(levels) - 1

    # A classification FAN has no dense outputs: these are None there rather than an error,
    # since hasattr(), inspect.getmembers() and the tracers read every attribute.
    @property
    def dense_channels(self) -> Optional[Tuple[int, ...]]:
        """Channels of the dense outputs, in order (FPN / decode-head ``in_channels``); None
        for a classification FAN (``dense=False``)."""
        if not self.dense:
            return None
        return tuple(self.dense_levels[i][0] for i in self.out_indices)

    @property
    def dense_strides(self) -> Optional[Tuple[int, ...]]:
        """Strides of the dense outputs, in order; None for a classification FAN."""
        if not self.dense:
            return None
        return tuple(self.dense_levels[i][1] for i in self.out_indices)

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Loads ``init_cfg=dict(type='Pretrained', ...)``, or initialises like the official code.

        Official init: truncated-normal (std 0.02) linear layers, ConvNeXt-stem convs and class
        token; He-normal (fan-out) convs inside the blocks; unit/zero LayerNorms.
        """
        init_cfg = self.init_cfg if isinstance(self.init_cfg, dict) else None
        if init_cfg is not None and init_cfg.get('type') == 'Pretrained':
            self._is_init = True
            self.load_report = fan_checkpoint.load_checkpoint(
                self,
                init_cfg['checkpoint'],
                use_ema=init_cfg.get('use_ema', self.use_ema),
                prefix=init_cfg.get('prefix'))
            return
        for module in self.blocks.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, std=math.sqrt(2. / (fan_out // module.groups)))
                nn.init.zeros_(module.bias)
        if self.is_hybrid:
            for module in self.patch_embed.backbone.modules():
                if isinstance(module, nn.Conv2d):
                    trunc_normal_(module.weight, std=.02)
                    nn.init.zeros_(module.bias)
        self.apply(self._official_init)
        trunc_normal_(self.cls_token, std=.02)
        if self.init_cfg is not None:
            super().init_weights()

    @staticmethod
    def _official_init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def checkpoint_key_policy(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """Key prefixes a fitting checkpoint may leave unused, and may lack (newly initialised).

        Classification checkpoints loaded for dense tasks leave the final ``norm`` unused and
        lack the dense extras (the stride-32 conv ``learnable_downsample`` and the
        ``out_norms``); dense checkpoints loaded for classification leave those unused and lack
        ``norm``. A dense backbone with ``out_norms`` may also leave the norms of the levels it
        does not return unused. Norms of an STL detection checkpoint stay unused only in a
        backbone without ``out_norms`` if it returns none of their levels; otherwise loading
        refuses the file and says to set ``out_norms=True``.
        """
        dense_extras = ('learnable_downsample.', 'out_norm')
        if not self.dense:
            return dense_extras, ('norm.', )
        skipped_norms = tuple(f'out_norm{level}.' for level in range(len(self.dense_levels))
                              if level not in self.out_indices)
        return ('norm.', 'learnable_downsample.', *skipped_norms), dense_extras

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise learning-rate decay.

        0: patch embedding and positional encoding; 1..depth: FAN blocks; depth + 1: class
        token, class attention, final norm and dense extras (and anything outside the
        backbone).

        Returns:
            (layer id, number of layers)
        """
        num_layers = self.depth + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name.startswith(('patch_embed.', 'pos_embed.')):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    # ------------------------------------------------------------------ training state
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 1:
            return
        frozen: List[nn.Module] = [self.patch_embed, self.pos_drop]
        if self.pos_embed is not None:
            frozen.append(self.pos_embed)
        frozen += list(self.blocks[:self.frozen_stages])
        if self.frozen_stages > self.depth:
            frozen += [self.cls_attn_blocks]
            frozen += [module for module in (getattr(self, 'norm', None), self.learnable_downsample)
                       if module is not None]
            frozen += list(self._out_norm_layers().values())
            self.cls_token.requires_grad = False
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'FAN':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # ------------------------------------------------------------------ forward
    def _run(self, block: nn.Module, *args):
        if self.with_cp and self.training and torch.is_grad_enabled():
            return cp.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _check_input(self, x: torch.Tensor) -> None:
        sides = x.shape[-2:]
        if torch.jit.is_tracing():
            # Traced sizes are 0-dim tensors, and reading their values warns that the values
            # become constants of the trace. Only this check reads them; nothing computed
            # from them enters the graph.
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', torch.jit.TracerWarning)
                sides = [int(side) for side in sides]
        height, width = sides
        if height % self.patch_stride or width % self.patch_stride:
            raise ValueError(f'FAN input sides must be multiples of {self.patch_stride}, got '
                             f'{height}x{width}; pad or resize the input (e.g. '
                             f'size_divisor={self.patch_stride * 2} in the data preprocessor).')

    def _class_attention(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.cls_attn_blocks:
            x = self._run(block, x)
        return x

    def forward(self, x: torch.Tensor) -> tuple:
        """Classification: ``((cls_feat (N, C), patch_map (N, C, H, W)),)``.

        Dense: a tuple of NCHW maps, one per ``out_indices`` entry.
        """
        self._check_input(x)
        x, hw, stem_maps = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed(hw)
        x = self.pos_drop(x)

        outs = {level: stem_maps[level] for level in self._stem_outs}
        for index, block in enumerate(self.blocks):
            x = self._run(block, x, hw)
            hw = block.output_grid(hw)
            if index in self._block_outs:
                outs[self._block_outs[index]] = tokens_to_map(x, hw).contiguous()
        if self._final_out in self.out_indices:
            outs[self._final_out] = self._format_output(self._class_attention(x), hw)
        for level, norm in self._out_norm_layers().items():
            outs[level] = norm(outs[level]).contiguous()
        return tuple(outs[level] for level in self.out_indices)

    def _out_norm_layers(self) -> Dict[int, nn.Module]:
        """The ``out_norms`` LayerNorms by dense level (empty without ``out_norms``)."""
        if not (self.dense and self.out_norms):
            return {}
        return {level: getattr(self, f'out_norm{level}') for level in self.out_indices}

    def _format_output(self, x: torch.Tensor, hw: Tuple[int, int]):
        """Final tokens (class token first) -> ``(cls_feat, patch_map)``, or the last dense map."""
        if not self.dense:
            x = self.norm(x)
            return x[:, 0], tokens_to_map(x[:, 1:], hw)
        out = tokens_to_map(x[:, 1:], hw).contiguous()
        return out if self.learnable_downsample is None else self.learnable_downsample(out)
