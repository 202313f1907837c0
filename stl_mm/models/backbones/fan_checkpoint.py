"""Reading FAN checkpoints and the one mapping between official and stl_mm keys.

Used by the :class:`~.fan.FAN` load hook and ``init_weights``, by
``tools/model_converters/fan_to_stl_mm.py``, and by the classifier and teacher helpers.

Official checkpoints (NVlabs FAN / STL, timm layout) hold one model state dict under
``state_dict`` / ``state_dict_ema`` (timm saver) or ``model`` / ``model_ema`` (DeiT-style
saver), possibly with ``module.`` prefixes. Their keys are the backbone keys of stl_mm's
:class:`~.fan.FAN` (the layers keep the official names) plus ``head.*`` (class logits) and,
for token-labelling models, ``aux_head.*`` (token logits). Legacy names handled here:

* ``pos_embeder.*`` (older releases) is our ``pos_embed.*``;
* a fused class-attention ``cls_attn_blocks.{i}.attn.qkv.*`` is split into ``q``, ``k``, ``v``.

stl_mm classifier checkpoints (mmengine) hold ``backbone.*``, ``head.head.*`` and
``head.aux_head.*`` instead.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

import stl_mm.compat  # noqa: F401  (safe-loading allow-list for mmengine checkpoints)

StateDict = Dict[str, torch.Tensor]

#: Official head prefix -> stl_mm TokenLabelingClassifier prefix.
HEAD_PREFIXES = {'head.': 'head.head.', 'aux_head.': 'head.aux_head.'}
BACKBONE_PREFIX = 'backbone.'
_FUSED_QKV = re.compile(r'^(cls_attn_blocks\.\d+\.attn\.)qkv\.(weight|bias)$')


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


# ---------------------------------------------------------------------- reading
def strip_module_prefix(state_dict: StateDict) -> StateDict:
    """Removes the ``module.`` prefix that (Distributed)DataParallel adds to every key."""
    return {(key[len('module.'):] if key.startswith('module.') else key): value
            for key, value in state_dict.items()}


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(value, torch.Tensor) for value in obj.values())


def read_checkpoint(path: str, use_ema: bool = True) -> Tuple[StateDict, str]:
    """Reads an official (timm / DeiT layout) or mmengine FAN checkpoint.

    Args:
        path: Checkpoint file.
        use_ema: Prefer the EMA weights when the file holds both.

    Returns:
        (state dict without ``module.`` prefixes, a sentence saying which weights were used)
    """
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    if _is_state_dict(checkpoint):
        return strip_module_prefix(checkpoint), f'{path}: plain state dict'
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(f'{path} holds a {type(checkpoint).__name__}, not a '
                                      'checkpoint dict or state dict.')
    if 'ema_state_dict' in checkpoint and 'state_dict' in checkpoint:
        # mmengine's EMAHook swaps before saving: 'state_dict' holds the averaged weights and
        # 'ema_state_dict' the raw ones, under 'module.' (plus the 'steps' counter).
        if use_ema:
            chosen, note = checkpoint['state_dict'], "EMA weights ('state_dict', mmengine EMAHook)"
        else:
            chosen = {key[len('module.'):]: value
                      for key, value in checkpoint['ema_state_dict'].items()
                      if key.startswith('module.')}
            note = "raw (non-EMA) weights ('ema_state_dict', mmengine EMAHook)"
        return strip_module_prefix(chosen), f'{path}: {note}'
    for ema_key, raw_key in (('state_dict_ema', 'state_dict'), ('model_ema', 'model')):
        if ema_key in checkpoint and _is_state_dict(checkpoint[ema_key]) and use_ema:
            return strip_module_prefix(checkpoint[ema_key]), f"{path}: EMA weights ('{ema_key}')"
        if raw_key in checkpoint and _is_state_dict(checkpoint[raw_key]):
            ema_note = (f", EMA '{ema_key}' present but use_ema=False"
                        if ema_key in checkpoint else ', no EMA weights in the file')
            return (strip_module_prefix(checkpoint[raw_key]),
                    f"{path}: weights from '{raw_key}'{ema_note}")
    raise CheckpointMismatchError(
        f'{path} has no state dict under state_dict, state_dict_ema, model or model_ema '
        f'(top-level keys: {sorted(checkpoint)[:20]}).')


# ---------------------------------------------------------------------- key mapping
def normalize_backbone_keys(state_dict: StateDict, prefix: str = '') -> StateDict:
    """Renames legacy official backbone keys under ``prefix`` in place and returns the dict.

    ``pos_embeder.`` becomes ``pos_embed.``; a fused class-attention ``qkv`` projection is
    split into ``q``, ``k`` and ``v`` (output rows in q, k, v order).
    """
    for key in [key for key in state_dict if key.startswith(prefix)]:
        name = key[len(prefix):]
        if name.startswith('pos_embeder.'):
            state_dict[prefix + 'pos_embed.' + name[len('pos_embeder.'):]] = state_dict.pop(key)
            continue
        match = _FUSED_QKV.match(name)
        if match:
            fused = state_dict.pop(key)
            for part, value in zip('qkv', fused.chunk(3, dim=0)):
                state_dict[f'{prefix}{match.group(1)}{part}.{match.group(2)}'] = value.clone()
    return state_dict


def is_official_layout(state_dict: StateDict) -> bool:
    """True for an official FAN model state dict (timm names, no ``backbone.`` prefix)."""
    keys = list(strip_module_prefix(state_dict))
    has_fan_keys = any(key == 'cls_token' or key.startswith(('blocks.', 'patch_embed.'))
                       for key in keys)
    return has_fan_keys and not any(key.startswith(BACKBONE_PREFIX) for key in keys)


def official_to_stl_mm(state_dict: StateDict) -> StateDict:
    """Official FAN model keys -> stl_mm TokenLabelingClassifier keys.

    ``head.*`` -> ``head.head.*``, ``aux_head.*`` -> ``head.aux_head.*``, all other keys ->
    ``backbone.*`` (after removing ``module.`` and renaming legacy keys).
    """
    if not is_official_layout(state_dict):
        raise CheckpointMismatchError(
            'official_to_stl_mm expects official FAN keys (cls_token, patch_embed.*, blocks.*, '
            f'head.*); got keys such as {list(state_dict)[:5]}.')
    official = normalize_backbone_keys(strip_module_prefix(state_dict))
    converted = {}
    for key, value in official.items():
        for head_prefix, new_prefix in HEAD_PREFIXES.items():
            if key.startswith(head_prefix):
                converted[new_prefix + key[len(head_prefix):]] = value
                break
        else:
            converted[BACKBONE_PREFIX + key] = value
    return converted


def stl_mm_to_official(state_dict: StateDict, strict: bool = True) -> StateDict:
    """stl_mm classifier keys -> official FAN model keys (inverse of :func:`official_to_stl_mm`).

    Args:
        state_dict: ``backbone.*``, ``head.head.*`` and ``head.aux_head.*`` keys.
        strict: Raise on keys outside those prefixes (else they are dropped).
    """
    converted, unknown = {}, []
    reverse_heads = {new: old for old, new in HEAD_PREFIXES.items()}
    for key, value in strip_module_prefix(state_dict).items():
        if key.startswith(BACKBONE_PREFIX):
            converted[key[len(BACKBONE_PREFIX):]] = value
            continue
        for new_prefix, old_prefix in reverse_heads.items():
            if key.startswith(new_prefix):
                converted[old_prefix + key[len(new_prefix):]] = value
                break
        else:
            unknown.append(key)
    if unknown and strict:
        raise CheckpointMismatchError(
            f'{len(unknown)} keys have no official counterpart (only backbone.*, head.head.* '
            f'and head.aux_head.* do): {unknown[:10]}')
    return converted


def official_keys_pre_hook(module: nn.Module, state_dict: StateDict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook of FAN: accepts legacy official backbone key names."""
    normalize_backbone_keys(state_dict, prefix)


# ---------------------------------------------------------------------- architecture guess
def _count(keys: Iterable[str], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({match.group(1) for key in keys for match in [regex.match(key)] if match})


def infer_arch(state_dict: StateDict) -> dict:
    """Architecture features readable from backbone keys (official names, no prefix).

    Token-mixing heads, ``eta`` and ``tokens_norm`` leave no trace in the weights; channel
    heads do (``temperature``).
    """
    sd = normalize_backbone_keys(dict(strip_module_prefix(state_dict)))
    depth = _count(sd, r'^blocks\.(\d+)\.norm1\.weight$')
    features = dict(
        depth=depth,
        embed_dims=tuple(sd[f'blocks.{i}.norm1.weight'].shape[0] for i in range(depth)
                         if f'blocks.{i}.norm1.weight' in sd),
        se_mlp='blocks.0.mlp.se.conv_reduce.weight' in sd,
        channel_heads=tuple(sd[f'blocks.{i}.mlp.temperature'].shape[0] for i in range(depth)
                            if f'blocks.{i}.mlp.temperature' in sd),
        cls_attn_layers=_count(sd, r'^cls_attn_blocks\.(\d+)\.norm1\.weight$'))
    if any(key.startswith('patch_embed.backbone.') for key in sd):
        stages = _count(sd, r'^patch_embed\.backbone\.stages\.(\d+)\.')
        features['hybrid_stem'] = dict(
            depths=tuple(
                _count(sd, rf'^patch_embed\.backbone\.stages\.{i}\.blocks\.(\d+)\.gamma$')
                for i in range(stages)),
            dims=tuple(sd[f'patch_embed.backbone.stages.{i}.blocks.0.gamma'].shape[0]
                       for i in range(stages)
                       if f'patch_embed.backbone.stages.{i}.blocks.0.gamma' in sd))
    else:
        convs = _count(sd, r'^patch_embed\.proj\.(\d+)\.0\.weight$')
        features['patch_size'] = {4: 16, 3: 8, 2: 4}.get(convs)
    return features


def _preset_features(settings: dict) -> dict:
    widths = settings['embed_dims']
    features = dict(
        depth=settings['depth'],
        embed_dims=tuple(widths),
        se_mlp=settings['se_mlp'],
        channel_heads=() if settings['se_mlp'] else tuple(
            c or h for c, h in zip(settings['channel_heads'], settings['num_heads'])),
        cls_attn_layers=settings['cls_attn_layers'])
    stem = settings['hybrid_stem']
    if stem is not None:
        features['hybrid_stem'] = dict(depths=tuple(stem['depths']),
                                       dims=tuple(stem['dims'][:len(stem['depths'])]))
    else:
        features['patch_size'] = settings['patch_size']
    return features


def guess_presets(state_dict: StateDict) -> List[str]:
    """Official preset names whose architecture matches backbone keys (official names)."""
    from .fan import FAN  # imported here: fan.py imports this module
    found = infer_arch(state_dict)
    return [name for name in FAN.official_names
            if _preset_features(FAN.resolve_arch(name)) == found]


def describe_arch(state_dict: StateDict) -> str:
    """A phrase naming the preset(s) a backbone state dict matches, or its features."""
    names = guess_presets(state_dict)
    if names:
        return f"FAN preset {' / '.join(names)}"
    return f'no FAN preset; its features are {infer_arch(state_dict)}'


# ---------------------------------------------------------------------- fitting and loading
@dataclass
class LoadReport:
    """What a checkpoint load used: the source sentence, unused and newly initialised keys."""
    source: str
    loaded: List[str] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)
    new: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f'{self.source}; loaded {len(self.loaded)} tensors; unused keys: '
                f'{self.unused or "none"}; newly initialised keys: {self.new or "none"}')


def _format_keys(keys: Sequence[str], limit: int = 12) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def check_fit(model: nn.Module,
              state_dict: StateDict,
              may_be_unused: Sequence[str] = (),
              may_be_new: Sequence[str] = (),
              model_description: str = '') -> Tuple[List[str], List[str]]:
    """Checks that ``state_dict`` fits ``model`` exactly, up to the allowed key prefixes.

    Raises:
        CheckpointMismatchError: naming missing, unexpected and mis-shaped keys and the
            presets the checkpoint matches.

    Returns:
        (unused checkpoint keys, model keys the checkpoint lacks), both within the allowances.
    """
    expected = model.state_dict()
    mismatched = [f'{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}'
                  for key, value in state_dict.items()
                  if key in expected and value.shape != expected[key].shape]
    unused = sorted(key for key in state_dict if key not in expected)
    new = sorted(key for key in expected if key not in state_dict)
    bad_unused = [key for key in unused if not key.startswith(tuple(may_be_unused))]
    bad_new = [key for key in new if not key.startswith(tuple(may_be_new))]
    if mismatched or bad_unused or bad_new:
        problems = []
        if mismatched:
            problems.append(f'shape mismatches: {_format_keys(mismatched)}')
        if bad_new:
            problems.append(f'missing from the checkpoint: {_format_keys(bad_new)}')
        if bad_unused:
            problems.append(f'not in the model: {_format_keys(bad_unused)}')
        raise CheckpointMismatchError(
            f'Checkpoint does not fit {model_description or type(model).__name__}: '
            f'{"; ".join(problems)}. The checkpoint looks like {describe_arch(state_dict)}; '
            f'build the backbone with that arch.')
    return unused, new


def load_backbone_checkpoint(backbone: nn.Module,
                             path: str,
                             prefix: Optional[str] = None,
                             use_ema: bool = True) -> LoadReport:
    """Loads an official or stl_mm checkpoint into a FAN backbone, exactly or not at all.

    Args:
        backbone: A :class:`~.fan.FAN`.
        path: Checkpoint file.
        prefix: Key prefix of the backbone in stl_mm (mmengine) checkpoints, e.g.
            ``'backbone.'``; None guesses (``backbone.`` when present, else none). Official
            checkpoints always map their backbone to ``backbone.``.
        use_ema: Prefer EMA weights when present.
    """
    state_dict, source = read_checkpoint(path, use_ema)
    if is_official_layout(state_dict):
        state_dict, prefix = official_to_stl_mm(state_dict), BACKBONE_PREFIX
        source += ', official layout'
    elif prefix is None:
        prefix = BACKBONE_PREFIX if any(k.startswith(BACKBONE_PREFIX) for k in state_dict) else ''
    outside = sorted(key for key in state_dict if not key.startswith(prefix))
    weights = {key[len(prefix):]: value for key, value in state_dict.items()
               if key.startswith(prefix)}
    if not weights:
        top = sorted({key.split('.')[0] + '.' for key in state_dict})
        raise CheckpointMismatchError(f'{path} has no keys under prefix {prefix!r}; its '
                                      f'top-level prefixes are {top}.')
    normalize_backbone_keys(weights)
    may_be_unused, may_be_new = backbone.checkpoint_key_policy()
    unused, new = check_fit(backbone, weights, may_be_unused, may_be_new,
                            f'{type(backbone).__name__}({describe_model(backbone)})')
    backbone.load_state_dict(weights, strict=False)
    report = LoadReport(source, sorted(set(weights) - set(unused)), outside + unused, new)
    print_log(f'FAN checkpoint: {report}', logger='current')
    return report


def describe_model(backbone: nn.Module) -> str:
    """Short description of a FAN backbone's architecture for messages."""
    names = guess_presets(backbone.state_dict())
    return f"arch {' / '.join(names)}" if names else 'custom arch'


def load_checkpoint(model: nn.Module, path: str, use_ema: bool = True) -> LoadReport:
    """Loads an official or stl_mm checkpoint into a whole classifier (``backbone.``/``head.``).

    The one entry point for evaluating or teaching with a checkpoint; strict.
    """
    state_dict, source = read_checkpoint(path, use_ema)
    if is_official_layout(state_dict):
        state_dict = official_to_stl_mm(state_dict)
        source += ', official layout'
    model.load_state_dict(state_dict, strict=True)
    return LoadReport(source, sorted(state_dict))
