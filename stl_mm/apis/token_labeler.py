"""Run a token labeler (a STL teacher) on the views a config's pipelines make.

Shared by the token-label figure (:mod:`stl_mm.visualization.token_labels`) and the demo's
token-label quality (:mod:`stl_mm.apis.demo`). The labeler is built and loaded by
:meth:`~stl_mm.engine.hooks.FrozenTeacherHook.build_teacher`, the one way a teacher is made:
from a stage-1 config and its checkpoint, from the ``FrozenTeacherHook`` of a stage-2 config
(``hook_teacher=True``), or from an official STL teacher checkpoint (converted on the fly).
"""
import copy
import random
from typing import Dict, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS, MODELS

from stl_mm.engine.hooks import FrozenTeacherHook
from stl_mm.models.classifiers import token_logits_of

__all__ = ['SPLITS', 'VIEWS', 'find_teacher_hook', 'load_token_labeler', 'build_view_dataset',
           'collect_views']

SPLITS = ('train', 'val', 'test')
#: Views: ``clean`` runs the split's test pipeline; ``teacher`` and ``student`` run the config's
#: training pipeline, which must make both views (DualView).
VIEWS = ('clean', 'teacher', 'student')
_VIEW_KEYS = {'clean': 'inputs', 'teacher': 'teacher_inputs', 'student': 'inputs'}


def find_teacher_hook(cfg: Config) -> dict:
    """The ``FrozenTeacherHook`` config of a stage-2 config (in default or custom hooks)."""
    hooks = list((cfg.get('default_hooks') or {}).values()) + list(cfg.get('custom_hooks') or [])
    for hook in hooks:
        if isinstance(hook, dict) and hook.get('type') == 'FrozenTeacherHook':
            return hook
    raise KeyError('The config has no FrozenTeacherHook; drop --hook-teacher to use the '
                   "config's own model as the token labeler.")


def load_token_labeler(cfg: Config, checkpoint: str, hook_teacher: bool = False,
                       device: str = 'cpu') -> nn.Module:
    """Build the token labeler and load its weights (EMA weights when the file has them).

    Args:
        cfg: The config.
        checkpoint: mmengine or official (timm layout) checkpoint of the token labeler.
        hook_teacher: Build the model of the config's FrozenTeacherHook instead of
            ``cfg.model``.
        device: Torch device.

    Returns:
        The frozen labeler in eval mode, with the config's data preprocessor.
    """
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = copy.deepcopy(find_teacher_hook(cfg)['model'] if hook_teacher else cfg.model)
    if not hook_teacher:
        # The classifier's own data preprocessor normalises the views.
        model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
        if model_cfg.get('mode') == 'student':
            model_cfg['mode'] = 'labeler'  # inference only: no teacher needed
    if model_cfg.get('head', {}).get('with_token_head', True) is False:
        raise ValueError('This model has no token head (with_token_head=False), so it makes no '
                         'token labels; pass a token labeler (stage-1) config and checkpoint.')
    model = FrozenTeacherHook(model=model_cfg, checkpoint=checkpoint).build_teacher()
    if hook_teacher:
        model.data_preprocessor = MODELS.build(copy.deepcopy(cfg.data_preprocessor))
    return model.to(device).eval()


def build_view_dataset(cfg: Config, split: str, view: str):
    """The split's dataset with the pipeline that makes ``view``.

    Args:
        cfg: The config.
        split: ``'train'``, ``'val'`` or ``'test'`` (the ``<split>_dataloader`` dataset).
        view: One of :data:`VIEWS`.
    """
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if split not in SPLITS or view not in VIEWS:
        raise ValueError(f'split must be one of {SPLITS} and view one of {VIEWS}; got '
                         f'{split!r}, {view!r}.')
    loader = cfg.get(f'{split}_dataloader')
    if loader is None:
        raise KeyError(f'The config has no {split}_dataloader; choose another --split.')
    dataset_cfg = copy.deepcopy(loader['dataset'])
    if view == 'clean':
        test_loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
        pipeline = copy.deepcopy(test_loader['dataset']['pipeline'])
    else:
        pipeline = copy.deepcopy(cfg.train_dataloader['dataset']['pipeline'])
        if view == 'teacher' and not any(step.get('type') == 'DualView' for step in pipeline):
            raise ValueError("view 'teacher' needs a training pipeline with DualView (a "
                             'stage-2 config); use --view clean or student here.')
    dataset_cfg['pipeline'] = pipeline
    dataset_cfg.pop('indices', None)
    return DATASETS.build(dataset_cfg)


@torch.no_grad()
def collect_views(model: nn.Module, dataset, indices: Sequence[int], views: Sequence[str],
                  batch_size: int = 256, seed: int = 0) -> Dict[str, Union[torch.Tensor, Dict]]:
    """Run the token labeler on views of the given images.

    ``views`` must be made by ``dataset``'s pipeline: ``'clean'`` or ``'student'`` (the packed
    ``inputs``) and ``'teacher'`` (``teacher_inputs``); random augmentation is seeded.

    Returns:
        ``classes`` (N,), and per view ``images[view]`` (N, 3, H, W) uint8 RGB as the model
        saw them before normalisation and ``token_logits[view]`` (N, K, h, w).
    """
    random.seed(seed)
    np.random.seed(seed)
    preprocessor = model.data_preprocessor
    bgr_input = bool(getattr(preprocessor, '_channel_conversion', False))
    device = next(model.parameters()).device
    classes, images, logits = [], {view: [] for view in views}, {view: [] for view in views}
    for start in range(0, len(indices), batch_size):
        packed = [dataset[int(index)] for index in indices[start:start + batch_size]]
        samples = [item['data_samples'] for item in packed]
        classes.append(torch.cat([sample.gt_label for sample in samples]))
        for view in views:
            key = _VIEW_KEYS[view]
            if key not in packed[0]:
                raise KeyError(f"The pipeline made no {key!r} for view {view!r}.")
            raw = torch.stack([item[key] for item in packed])
            normalised = preprocessor(dict(inputs=[image for image in raw],
                                           data_samples=samples), False)['inputs']
            token_logits = token_logits_of(model, normalised.to(device))
            images[view].append(raw.flip(1) if bgr_input and raw.shape[1] == 3 else raw)
            logits[view].append(token_logits.float().cpu())
    return dict(classes=torch.cat(classes),
                images={view: torch.cat(images[view]) for view in views},
                token_logits={view: torch.cat(logits[view]) for view in views})
