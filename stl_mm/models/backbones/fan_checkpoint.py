"""The one way checkpoints reach FAN models: reading, the official <-> stl_mm key mapping,
and :func:`load_checkpoint`.

Every path that puts checkpoint weights into a model calls :func:`load_checkpoint`: a
:class:`~.fan.FAN` ``init_cfg=dict(type='Pretrained', ...)``, ``load_from`` when training
(:class:`~stl_mm.engine.hooks.LoadCheckpointHook`), ``tools/test.py`` and the other evaluators
(:func:`~stl_mm.engine.runner_setup.build_test_runner`) and the frozen teacher
(:class:`~stl_mm.models.classifiers.FrozenTeacher`); ``tools/model_converters/fan_to_stl_mm.py``
calls :func:`convert_checkpoint`, which reads with the same :func:`read_checkpoint`.

Layouts. Official checkpoints (NVlabs FAN / STL, timm layout) hold one model state dict under
``state_dict`` / ``state_dict_ema`` (timm saver) or ``model`` / ``model_ema`` (DeiT-style
saver), possibly with ``module.`` prefixes, or are a bare state dict. Their keys are the
backbone keys of stl_mm's :class:`~.fan.FAN` (the layers keep the official names) plus
``head.*`` (class logits) and, for token-labelling models, ``aux_head.*`` (token logits).
stl_mm classifier checkpoints (mmengine) hold ``backbone.*``, ``head.head.*`` and
``head.aux_head.*`` instead. Legacy official names handled here:

* ``pos_embeder.*`` (older releases) is our ``pos_embed.*``;
* a fused class-attention ``cls_attn_blocks.{i}.attn.qkv.*`` is split into ``q``, ``k``, ``v``.

EMA rule, the same default (``use_ema=True``) on every path: when a file holds both averaged
(EMA) and raw weights, the EMA weights are used: ``state_dict`` of an mmengine checkpoint saved
with ``EMAHook`` (the hook swaps the averaged weights in before saving, ``ema_state_dict`` then
holds the raw ones), ``state_dict_ema`` (timm) or ``model_ema`` (DeiT). ``use_ema=False`` takes
the raw weights. A file with one set of weights uses it. The report and the log say which.

Strictness: the model and the file must have the same keys with the same shapes. The only
exceptions are the keys a backbone declares task-specific (``FAN.checkpoint_key_policy``:
the classification ``norm`` and the dense ``learnable_downsample``) and the model-key prefixes
a caller names in ``reinit`` (fine-tuning with a new head); both keep their initial values and
the report lists them. Anything else raises :class:`CheckpointMismatchError` naming the file,
the keys, their shapes and the preset the file looks like. A file that cannot be read raises
:class:`CheckpointReadError` naming the file and the reason. Safe loading
(``torch.load(weights_only=True)`` with the allow-list of :mod:`stl_mm.compat.checkpoint`) is
the only way files are opened.
"""
import os.path as osp
import pickle
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

import stl_mm.compat  # noqa: F401  (safe-loading allow-list for mmengine checkpoints)
from .fan_presets import OFFICIAL_NAMES, resolve_arch

StateDict = Dict[str, torch.Tensor]

#: Official head prefix -> stl_mm TokenLabelingClassifier prefix.
HEAD_PREFIXES = {'head.': 'head.head.', 'aux_head.': 'head.aux_head.'}
BACKBONE_PREFIX = 'backbone.'
_FUSED_QKV = re.compile(r'^(cls_attn_blocks\.\d+\.attn\.)qkv\.(weight|bias)$')
_REFUSED_GLOBAL = re.compile(r'Unsupported global: GLOBAL (\S+)')
_OUT_NORM = re.compile(r'^(out_norm\d+)\.')


class CheckpointError(ValueError):
    """A checkpoint cannot be used (base of the two errors below)."""


class CheckpointReadError(CheckpointError):
    """A checkpoint file cannot be read: missing, empty, truncated, not a checkpoint, or
    refused by safe loading."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f'Cannot read checkpoint {path}: {reason}')
        self.path, self.reason = path, reason


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the model it is loaded into."""


# ---------------------------------------------------------------------- reading
def strip_module_prefix(state_dict: StateDict) -> StateDict:
    """Removes the ``module.`` prefix that (Distributed)DataParallel adds to every key."""
    return {(key[len('module.'):] if key.startswith('module.') else key): value
            for key, value in state_dict.items()}


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(value, torch.Tensor) for value in obj.values())


_DAMAGED = ('it is damaged or was not written completely (a run killed while saving leaves '
            'such files); use another checkpoint, e.g. an earlier epoch_*.pth')


def _failure_reason(error: Exception) -> str:
    """Why ``torch.load`` failed on a file, in words (torch raises many types for one cause)."""
    message = str(error)
    refused = _REFUSED_GLOBAL.search(message)
    if isinstance(error, pickle.UnpicklingError) and refused:
        return (f'safe loading (torch.load(weights_only=True)) refuses the object '
                f'{refused.group(1)} it holds: only tensors and the objects mmengine and timm '
                'save are allowed (stl_mm/compat/checkpoint.py). If the file is intact and you '
                'trust it, load it once with weights_only=False and save only its state dict; '
                f'otherwise {_DAMAGED}')
    if isinstance(error, EOFError):
        return f'the file ends early: {_DAMAGED}'
    if 'zip archive' in message:
        return f'it is not a complete PyTorch zip archive: {_DAMAGED}'
    first_line = message.strip().splitlines()[0] if message.strip() else ''
    return (f'it is not a PyTorch checkpoint ({type(error).__name__}: {first_line[:200]}); '
            f'{_DAMAGED}')


def _load_file(path: str):
    """``torch.load`` with safe loading; every failure becomes :class:`CheckpointReadError`."""
    if '://' in path:
        raise CheckpointReadError(path, 'only local files are read; download it first and '
                                  'pass the local path')
    if not osp.exists(path):
        raise CheckpointReadError(path, 'no such file')
    if osp.isdir(path):
        raise CheckpointReadError(path, 'it is a directory; name a .pth file in it')
    if osp.getsize(path) == 0:
        raise CheckpointReadError(path, f'the file is empty (0 bytes): {_DAMAGED}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # noqa: B902  (damaged files raise any type; all are reported)
        raise CheckpointReadError(path, _failure_reason(error)) from error


def read_checkpoint(path: str, use_ema: bool = True) -> Tuple[StateDict, str]:
    """Reads an official (timm / DeiT layout) or mmengine FAN checkpoint.

    Args:
        path: Local checkpoint file.
        use_ema: Prefer the EMA weights when the file holds both (the EMA rule of this
            module).

    Raises:
        CheckpointReadError: the file cannot be read or holds no state dict.

    Returns:
        (state dict without ``module.`` prefixes, a sentence saying which weights were used)
    """
    checkpoint = _load_file(path)
    if _is_state_dict(checkpoint):
        return strip_module_prefix(checkpoint), f'{path}: plain state dict'
    if not isinstance(checkpoint, dict):
        raise CheckpointReadError(path, f'it holds a {type(checkpoint).__name__}, not a '
                                  'checkpoint dict or state dict')
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
    raise CheckpointReadError(
        path, 'it is not a checkpoint: no state dict under state_dict, state_dict_ema, model '
        f'or model_ema (top-level keys: {sorted(map(str, checkpoint))[:20]})')


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
    found = infer_arch(state_dict)
    return [name for name in OFFICIAL_NAMES if _preset_features(resolve_arch(name)) == found]


def describe_arch(state_dict: StateDict) -> str:
    """'FAN preset <names>' for the preset(s) a backbone state dict matches, else
    'a custom FAN (<features>)'."""
    names = guess_presets(state_dict)
    return (f"FAN preset {' / '.join(names)}" if names else
            f'a custom FAN ({infer_arch(state_dict)})')


def _backbone_part(state_dict: StateDict) -> StateDict:
    """The ``backbone.*`` keys without the prefix, or the whole dict if it has none."""
    if not any(key.startswith(BACKBONE_PREFIX) for key in state_dict):
        return state_dict
    return {key[len(BACKBONE_PREFIX):]: value for key, value in state_dict.items()
            if key.startswith(BACKBONE_PREFIX)}


def _out_norm_levels(backbone: StateDict) -> List[str]:
    """The ``out_norm{level}`` modules (STL's detection backbone) among backbone keys."""
    return sorted({match.group(1) for key in backbone
                   for match in [_OUT_NORM.match(key)] if match})


def _out_norm_hint(model_backbone: StateDict, file_backbone: StateDict) -> str:
    """Says which ``out_norms`` setting fits the file when only one side has the norms."""
    model_norms, file_norms = _out_norm_levels(model_backbone), _out_norm_levels(file_backbone)
    if file_norms and not model_norms:
        return (" The file's backbone has a LayerNorm on each dense output "
                f"({', '.join(file_norms)}: STL's detection backbone) and the model's has none: "
                'build the backbone with out_norms=True (as configs/det/'
                'cascade-mask-rcnn_stl-fan-*-hybrid_fpn_ms-3x_coco.py do).')
    if model_norms and not file_norms:
        return (" The model's backbone has a LayerNorm on each dense output (out_norms=True: "
                "STL's detection backbone) and the file's has none (the FAN repository's "
                'detection backbone, or a segmentation one): build the backbone with '
                'out_norms=False, or load a checkpoint of STL\'s detection backbone.')
    return ''


def _arch_hint(model_state: StateDict, file_state: StateDict) -> str:
    """What to do about a misfit, judged from the FAN backbones of the model and the file."""
    model_backbone, file_backbone = _backbone_part(model_state), _backbone_part(file_state)
    if not (is_official_layout(model_backbone) and is_official_layout(file_backbone)):
        return ''  # not FAN backbones: the key lists say it all
    model_arch = describe_arch(model_backbone)
    norm_hint = _out_norm_hint(model_backbone, file_backbone)
    if infer_arch(model_backbone) == infer_arch(file_backbone):
        if norm_hint:
            return (f'{norm_hint} Otherwise its backbone has the architecture of the model '
                    f'({model_arch}).')
        return (f' Its backbone has the architecture of the model ({model_arch}), so the keys '
                'above differ elsewhere, e.g. a head with another num_classes or in_channels: '
                'make the model config match the file, or, fine-tuning on purpose, name the '
                'keys to re-initialise (tools/train.py: --cfg-options load_from_reinit=head.).')
    if not guess_presets(file_backbone) and guess_presets(model_backbone):
        return (f' The file matches no FAN preset, it looks like {describe_arch(file_backbone)}, '
                f'while the model is {model_arch}: the file is incomplete or of a custom arch; '
                'load a complete checkpoint of the model, or build the model with the arch of '
                f'the file.{norm_hint}')
    return (f' The file looks like {describe_arch(file_backbone)}; the model is {model_arch}: '
            "build the model with the file's arch, or load a checkpoint of the model's arch."
            f'{norm_hint}')


# ---------------------------------------------------------------------- fitting and loading
@dataclass
class LoadReport:
    """What :func:`load_checkpoint` loaded.

    Attributes:
        source: The file and the weights of it that were used (EMA or raw, layout).
        loaded: Model keys set from the file.
        unused: File keys the model did not take (outside ``prefix``, or task-specific).
        new: Model keys the file did not set (task-specific keys, or ``reinit``): they keep
            their initial values.
    """
    source: str
    loaded: List[str] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)
    new: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f'{self.source}; loaded {len(self.loaded)} tensors; unused keys: '
                f'{_format_keys(self.unused) or "none"}; kept initialised (not loaded): '
                f'{_format_keys(self.new) or "none"}')


def _format_keys(keys: Sequence[str], limit: int = 12) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def check_fit(model: nn.Module,
              state_dict: StateDict,
              path: str = 'The checkpoint',
              may_be_unused: Sequence[str] = (),
              may_be_new: Sequence[str] = (),
              may_be_reshaped: Sequence[str] = ()) -> Tuple[List[str], List[str], List[str]]:
    """Checks that ``state_dict`` fits ``model`` exactly, up to the allowed key prefixes.

    Args:
        model: The model the weights are for.
        state_dict: The weights, with the model's key names.
        path: The file, for messages.
        may_be_unused: Prefixes of file keys the model may lack.
        may_be_new: Prefixes of model keys the file may lack.
        may_be_reshaped: Prefixes of keys whose shapes may differ (they are not loaded).

    Raises:
        CheckpointMismatchError: naming the file, the missing, unexpected and mis-shaped keys
            (with shapes), the preset the file looks like, and what to do.

    Returns:
        (unused file keys, model keys the file lacks, keys of other shapes), each within the
        allowances.
    """
    expected = model.state_dict()
    reshaped = [key for key, value in state_dict.items()
                if key in expected and value.shape != expected[key].shape]
    unused = sorted(key for key in state_dict if key not in expected)
    new = sorted(key for key in expected if key not in state_dict)
    problems = []
    bad_reshaped = [key for key in reshaped if not key.startswith(tuple(may_be_reshaped))]
    if bad_reshaped:
        problems.append('shape mismatches: ' + _format_keys([
            f'{key}: checkpoint {tuple(state_dict[key].shape)} vs model '
            f'{tuple(expected[key].shape)}' for key in bad_reshaped]))
    bad_new = [key for key in new if not key.startswith(tuple(may_be_new))]
    if bad_new:
        problems.append(f'missing from the checkpoint: {_format_keys(bad_new)}')
    bad_unused = [key for key in unused if not key.startswith(tuple(may_be_unused))]
    if bad_unused:
        problems.append(f'not in the model: {_format_keys(bad_unused)}')
    if problems:
        raise CheckpointMismatchError(
            f'{path} does not fit {type(model).__name__}: {"; ".join(problems)}.'
            f'{_arch_hint(expected, state_dict)}')
    return unused, new, reshaped


def _as_prefixes(reinit: Union[str, Sequence[str]], model_keys: Iterable[str]) -> Tuple[str, ...]:
    """``reinit`` as a tuple of key prefixes, each naming some key of the model."""
    prefixes = (reinit, ) if isinstance(reinit, str) else tuple(reinit)
    keys = list(model_keys)
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f'reinit / load_from_reinit takes model key prefixes such as '
                             f"'head.'; got {prefix!r}.")
        if not any(key.startswith(prefix) for key in keys):
            tops = sorted({key.split('.')[0] + '.' for key in keys})
            raise ValueError(f'reinit / load_from_reinit prefix {prefix!r} names no key of the '
                             f'model (its keys start with {tops}).')
    return prefixes


def load_checkpoint(model: nn.Module,
                    path: str,
                    use_ema: bool = True,
                    *,
                    prefix: Optional[str] = '',
                    reinit: Union[str, Sequence[str]] = ()) -> LoadReport:
    """Loads an official or stl_mm checkpoint into ``model``, exactly or not at all.

    The one loading API of the package (see the module docstring for the EMA rule and the
    strictness). Logs and returns what was loaded.

    Args:
        model: A whole model (e.g. a ``TokenLabelingClassifier``: ``backbone.*``, ``head.*``)
            or a :class:`~.fan.FAN` backbone.
        path: Local checkpoint file, ours (mmengine) or official (timm / DeiT layout).
        use_ema: The EMA rule: EMA weights when the file holds both; False takes the raw ones.
        prefix: Part of an stl_mm checkpoint to load, e.g. ``'backbone.'`` for a backbone from
            a classifier checkpoint; ``''`` the whole file; None guesses (``backbone.`` when
            the file has such keys and the model has none of its own). Official checkpoints
            always guess (their backbone becomes ``backbone.*``).
        reinit: Model-key prefixes allowed to differ from the file (missing, unused or of
            another shape), e.g. ``'head.'`` to fine-tune with a new head. They keep their
            initial values and the report and the log list them.

    Raises:
        CheckpointReadError: The file cannot be read.
        CheckpointMismatchError: The file does not fit the model.

    Returns:
        The :class:`LoadReport`.
    """
    expected = model.state_dict()
    reinit = _as_prefixes(reinit, expected)
    state_dict, source = read_checkpoint(path, use_ema)
    if is_official_layout(state_dict):
        state_dict, prefix = official_to_stl_mm(state_dict), None
        source += ', official layout'
    else:
        normalize_backbone_keys(state_dict, BACKBONE_PREFIX)
    if prefix is None:
        has_backbone = [any(key.startswith(BACKBONE_PREFIX) for key in keys)
                        for keys in (state_dict, expected)]
        prefix = BACKBONE_PREFIX if has_backbone == [True, False] else ''
    weights = {key[len(prefix):]: value for key, value in state_dict.items()
               if key.startswith(prefix)}
    if not weights:
        top = sorted({key.split('.')[0] + '.' for key in state_dict})
        raise CheckpointMismatchError(f'{path} has no keys under prefix {prefix!r}; its '
                                      f'top-level prefixes are {top}.')
    policy = getattr(model, 'checkpoint_key_policy', None)
    optional_unused, optional_new = policy() if policy is not None else ((), ())
    unused, new, reshaped = check_fit(model, weights, path, (*optional_unused, *reinit),
                                      (*optional_new, *reinit), reinit)
    for key in reshaped:
        del weights[key]
    model.load_state_dict(weights, strict=False)
    outside = sorted(key for key in state_dict if not key.startswith(prefix))
    report = LoadReport(source, sorted(set(weights) - set(unused)), outside + unused,
                        sorted(new + reshaped))
    print_log(f'load_checkpoint into {type(model).__name__}: {report}', logger='current')
    return report


def convert_checkpoint(src: str, dst: str, reverse: bool = False, use_ema: bool = True) -> str:
    """Writes ``src`` in the other layout to ``dst``; returns a one-line summary.

    Args:
        src: Official checkpoint (or, with ``reverse``, an stl_mm classifier checkpoint).
        dst: Output file: ``{'meta', 'state_dict'}`` in the stl_mm layout, or
            ``{'state_dict', 'arch'}`` in the official layout with ``reverse``.
        reverse: Convert stl_mm -> official.
        use_ema: The EMA rule of :func:`read_checkpoint`.
    """
    state_dict, source = read_checkpoint(src, use_ema=use_ema)
    if reverse:
        if is_official_layout(state_dict):
            raise CheckpointError(f'{src} is already in the official layout; drop --reverse.')
        official = stl_mm_to_official(state_dict)
        torch.save({'state_dict': official, 'arch': describe_arch(official)}, dst)
        return f'{source} -> {dst} (official layout, {len(official)} tensors)'
    if not is_official_layout(state_dict):
        raise CheckpointError(f'{src} is not an official FAN checkpoint (no top-level cls_token '
                              '/ blocks.* keys); for an stl_mm checkpoint use --reverse.')
    converted = official_to_stl_mm(state_dict)
    meta = dict(source=osp.basename(src), converted_from=source, arch=describe_arch(state_dict))
    torch.save({'meta': meta, 'state_dict': converted}, dst)
    return f'{source} -> {dst} (stl_mm layout, {len(converted)} tensors; {meta["arch"]})'
