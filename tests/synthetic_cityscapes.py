"""A tiny Cityscapes tree in mmseg's layout, for the segmentation and City-C tests.

``make_cityscapes(root)`` writes::

    root/leftImg8bit/{train,val}/<city>/<city>_<id>_leftImg8bit.png       (BGR, 8 bit)
    root/gtFine/{train,val}/<city>/<city>_<id>_gtFine_labelTrainIds.png   (train ids, 255 ignore)

Labels are horizontal bands of a few classes with an ignored stripe; each image is its label's
class colour plus noise, so a model can in principle learn the mapping.

``tiny_segmentation_config`` shrinks a configs/seg config to that tree. Test files load this
module by path (the suite runs with ``--import-mode=importlib``).
"""
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
from mmengine.config import Config

REPO_ROOT = Path(__file__).resolve().parents[1]
IGNORE_INDEX = 255
CLASS_COLOURS = np.random.default_rng(7).integers(0, 256, size=(19, 3), dtype=np.uint8)


def _label_map(rng: np.random.Generator, size: Tuple[int, int]) -> np.ndarray:
    height, width = size
    classes = rng.choice(19, size=4, replace=False)
    bounds = np.linspace(0, height, len(classes) + 1).astype(int)
    label = np.empty(size, dtype=np.uint8)
    for cls, top, bottom in zip(classes, bounds[:-1], bounds[1:]):
        label[top:bottom] = cls
    label[:, width // 2:width // 2 + 3] = IGNORE_INDEX
    return label


def make_cityscapes(root: Path,
                    images_per_split: Dict[str, List[str]] = None,
                    size: Tuple[int, int] = (64, 128),
                    seed: int = 0) -> Dict[str, List[Path]]:
    """Write the tree under ``root``.

    Args:
        root: Dataset root (what a config calls ``data_root``).
        images_per_split: Split -> ``<city>/<city>_<id>`` stems. Defaults to two val cities with
            two and one images, and two train images.
        size: (height, width) of every image.
        seed: Seed of the noise and of the label layouts.

    Returns:
        Split -> image paths written.
    """
    images_per_split = images_per_split or {
        'train': ['aachen/aachen_000000_000019', 'aachen/aachen_000001_000019'],
        'val': ['frankfurt/frankfurt_000000_000294', 'frankfurt/frankfurt_000000_000576',
                'lindau/lindau_000000_000019'],
    }
    rng = np.random.default_rng(seed)
    written = {}
    for split, stems in images_per_split.items():
        written[split] = []
        for stem in stems:
            label = _label_map(rng, size)
            image_rgb = CLASS_COLOURS[np.where(label == IGNORE_INDEX, 0, label)]
            noise = rng.integers(-20, 21, size=image_rgb.shape)
            image_rgb = np.clip(image_rgb.astype(int) + noise, 0, 255).astype(np.uint8)
            image_path = root / 'leftImg8bit' / split / f'{stem}_leftImg8bit.png'
            label_path = root / 'gtFine' / split / f'{stem}_gtFine_labelTrainIds.png'
            image_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image_path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(label_path), label)
            written[split].append(image_path)
    return written


def tiny_segmentation_config(config: Path, data_root: Path, work_dir: Path,
                             max_iters: int = 2, validate: bool = False) -> Config:
    """A real segmentation config shrunk to the synthetic data: 64x64 crops, 2 iterations.

    Only sizes, paths, batch and worker counts, the schedule's length, (unless ``validate``)
    validation during training, and the head's width (768 -> 64: at these sizes it would
    dominate CPU time) change; backbone, wiring, optimizer and the pipelines' transforms stay
    those of the config. The encoder starts from its own initialisation.
    """
    cfg = Config.fromfile(str(config))
    crop = (64, 64)
    cfg.work_dir = str(work_dir)
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.channels = 64
    cfg.model.data_preprocessor.size = crop
    cfg.model.test_cfg = dict(mode='slide', crop_size=crop, stride=crop)  # 2 windows per image
    for step in cfg.train_dataloader.dataset.pipeline:
        if step.type == 'RandomResize':
            step.scale = (128, 64)
        elif step.type == 'RandomCrop':
            step.crop_size = crop
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = str(data_root)
        for step in cfg[loader].dataset.pipeline:
            if step.type == 'Resize':
                step.scale = (128, 64)
    cfg.train_dataloader.batch_size = 2
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1),
        dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1, end=max_iters)]
    cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters,
                         val_begin=1 if validate else max_iters + 1)
    cfg.default_hooks.checkpoint.update(interval=max_iters)
    cfg.default_hooks.logger.interval = 1
    cfg.env_cfg.cudnn_benchmark = False
    return cfg
