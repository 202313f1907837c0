"""The FAN architecture presets and the rules of a custom ``arch`` dict.

Kept apart from :mod:`.fan` so that both the backbone and :mod:`.fan_checkpoint` (which names
the preset a checkpoint looks like) import it, and neither imports the other.
"""
import copy
from typing import Dict, List, Union

#: Keys a custom ``arch`` dict must hold.
ARCH_REQUIRED = (
    'embed_dims',  # int, or one width per block (a change inserts an overlapping downsample)
    'depth',  # number of FAN blocks
    'num_heads',  # int, or one per block: heads of token mixing
)
#: Optional keys of a custom ``arch`` dict, with their defaults.
ARCH_DEFAULTS = dict(
    channel_heads=None,  # heads of channel processing (int, per-block list, or None: num_heads)
    patch_size=16,  # FAN-ViT convolutional patch embedding: 4, 8 or 16 (unused by hybrids)
    hybrid_stem=None,  # dict(depths=[...], dims=[...]): ConvNeXt stem, makes a FAN-Hybrid
    mlp_ratio=4.,
    qkv_bias=True,
    se_mlp=False,  # SE-MLP instead of channel processing
    cls_attn_layers=2,
    eta=1.,  # initial layer-scale value
    tokens_norm=True,  # class-attention norm2 applies to all tokens
    use_pos_embed=True,
    dense_blocks=None,  # blocks whose tokens are dense outputs (official choices per preset)
)

VIT_DENSE_BLOCKS = (4, 7, 11)


def _vit(embed_dims: int, depth: int, num_heads: int, **extra) -> dict:
    return dict(embed_dims=embed_dims, depth=depth, num_heads=num_heads, patch_size=16,
                dense_blocks=VIT_DENSE_BLOCKS, **extra)


def _hybrid(embed_dims: Union[int, List[int]], depth: int, num_heads: Union[int, List[int]],
            stem_depths: List[int], dense_block: int) -> dict:
    return dict(embed_dims=embed_dims, depth=depth, num_heads=num_heads,
                hybrid_stem=dict(depths=stem_depths, dims=[128, 256]),
                dense_blocks=(dense_block, ))


def _names(*names: str) -> List[str]:
    return [name.lower() for name in names]


#: Preset settings by name; official names and short aliases share one dict.
ARCH_ZOO: Dict[str, dict] = {
    **dict.fromkeys(_names('fan_tiny_12_p16_224', 'tiny', 't', 'fan-t'), _vit(192, 12, 4)),
    **dict.fromkeys(_names('fan_small_12_p16_224', 'small', 's', 'fan-s'), _vit(384, 12, 8)),
    **dict.fromkeys(
        _names('fan_small_12_p16_224_se_attn', 'small-se', 's-se', 'fan-s-se'),
        _vit(384, 12, 8, se_mlp=True)),
    **dict.fromkeys(_names('fan_base_18_p16_224', 'base', 'b', 'fan-b'), _vit(448, 18, 8)),
    **dict.fromkeys(_names('fan_large_24_p16_224', 'large', 'l', 'fan-l'), _vit(480, 24, 10)),
    **dict.fromkeys(
        _names('fan_tiny_8_p4_hybrid', 'fan_tiny_8_p4_hybrid_token', 'tiny-hybrid', 't-hybrid'),
        _hybrid(192, 8, 8, [3, 3], 7)),
    **dict.fromkeys(
        _names('fan_small_12_p4_hybrid', 'fan_small_12_p4_hybrid_token', 'small-hybrid',
               's-hybrid'), _hybrid(384, 10, 8, [3, 3], 9)),
    **dict.fromkeys(
        _names('fan_base_16_p4_hybrid', 'fan_base_16_p4_hybrid_token', 'fan_base_12_p4_hybrid',
               'base-hybrid', 'b-hybrid'), _hybrid(448, 16, 8, [3, 3], 15)),
    **dict.fromkeys(
        _names('fan_large_16_p4_hybrid', 'fan_large_16_p4_hybrid_token',
               'fan_large_12_p4_hybrid', 'large-hybrid', 'l-hybrid'),
        _hybrid(480, 22, 10, [3, 5], 18)),
    **dict.fromkeys(
        _names('fan_xlarge_16_p4_hybrid', 'xlarge-hybrid', 'xl-hybrid'),
        _hybrid([528] * 20 + [768] * 3, 23, [11] * 20 + [16] * 3, [3, 7], 18)),
}
#: The official model names (one per distinct architecture, token variants included).
OFFICIAL_NAMES = ('fan_tiny_12_p16_224', 'fan_small_12_p16_224', 'fan_small_12_p16_224_se_attn',
                  'fan_base_18_p16_224', 'fan_large_24_p16_224', 'fan_tiny_8_p4_hybrid',
                  'fan_small_12_p4_hybrid', 'fan_base_16_p4_hybrid', 'fan_large_16_p4_hybrid',
                  'fan_Xlarge_16_p4_hybrid', 'fan_tiny_8_p4_hybrid_token',
                  'fan_small_12_p4_hybrid_token', 'fan_base_16_p4_hybrid_token',
                  'fan_large_16_p4_hybrid_token')
#: Names of the official detection backbones (NVlabs FAN and STL ``detection/models/fan.py``)
#: that differ from the classification name of the same architecture. Both detection classes
#: output the tokens of the block that the preset's ``dense_blocks`` names (15 and 18).
OFFICIAL_DETECTION_NAMES = {'fan_base_12_p4_hybrid': 'fan_base_16_p4_hybrid',
                            'fan_large_12_p4_hybrid': 'fan_large_16_p4_hybrid'}
#: Official FAN-Swin models (Swin stages with FAN channel processing): another architecture.
UNSUPPORTED_PREFIX = 'fan_swin_'


def resolve_arch(arch: Union[str, dict], arch_zoo: Dict[str, dict] = ARCH_ZOO) -> dict:
    """Preset name (looked up in ``arch_zoo``) or custom dict -> complete settings with
    per-block lists."""
    if isinstance(arch, str):
        key = arch.lower()
        if key.startswith(UNSUPPORTED_PREFIX):
            raise KeyError(f'FAN arch {arch!r} is an official FAN-Swin model (Swin stages with '
                           'FAN channel processing), which stl_mm does not implement; the FAN '
                           'class builds the FAN-ViT and FAN-Hybrid families (see '
                           'docs/presets.md).')
        if key not in arch_zoo:
            raise KeyError(f'Unknown FAN arch {arch!r}. Presets: '
                           f'{", ".join(sorted(set(arch_zoo)))}; or pass a dict with '
                           f'keys {ARCH_REQUIRED} and optionally {sorted(ARCH_DEFAULTS)}.')
        arch = arch_zoo[key]
    if not isinstance(arch, dict):
        raise TypeError(f'FAN arch must be a preset name or a dict, got {type(arch)}.')
    unknown = set(arch) - set(ARCH_DEFAULTS) - set(ARCH_REQUIRED)
    if unknown:
        raise KeyError(f'Unknown FAN arch keys {sorted(unknown)}; allowed: '
                       f'{sorted(ARCH_REQUIRED + tuple(ARCH_DEFAULTS))}.')
    missing = [key for key in ARCH_REQUIRED if arch.get(key) is None]
    if missing:
        raise KeyError(f'FAN arch dict needs {missing}.')
    settings = copy.deepcopy({**ARCH_DEFAULTS, **arch})
    depth = settings['depth']
    for key in ('embed_dims', 'num_heads', 'channel_heads'):
        value = settings[key]
        if value is None or isinstance(value, int):
            settings[key] = [value] * depth
        elif len(value) != depth:
            raise ValueError(f'FAN arch {key} has {len(value)} entries for {depth} blocks.')
        else:
            settings[key] = list(value)
    if settings['dense_blocks'] is None:
        settings['dense_blocks'] = ((depth - 1, ) if settings['hybrid_stem'] else tuple(
            i for i in VIT_DENSE_BLOCKS if i < depth))
    settings['dense_blocks'] = tuple(settings['dense_blocks'])
    return settings
