"""A tiny COCO-format instance segmentation dataset, written to disk for detection tests.

Each image is a noisy background with a few solid, brightly coloured shapes (rectangles and
triangles); every shape has its box, its polygon mask and a COCO category. Everything is drawn
from a seeded generator, so a dataset is the same on every run.

Tests import it after putting ``tests/`` on ``sys.path`` (pytest runs with
``--import-mode=importlib``, which does not do that).
"""
import json
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
from mmdet.datasets import CocoDataset
from mmengine.config import Config

#: All 80 COCO classes (mmdet's CocoDataset and CocoMetric map labels through these names);
#: the synthetic objects use the first few.
CATEGORIES = [dict(id=label + 1, name=name)
              for label, name in enumerate(CocoDataset.METAINFO['classes'])]
OBJECT_CATEGORIES = CATEGORIES[:3]


def _random_shape(rng: np.random.Generator, height: int,
                  width: int) -> Tuple[List[float], np.ndarray]:
    """A rectangle or triangle fully inside the image: (flat polygon, int32 vertices)."""
    box_w = int(rng.integers(width // 4, width // 2))
    box_h = int(rng.integers(height // 4, height // 2))
    x0 = int(rng.integers(0, width - box_w))
    y0 = int(rng.integers(0, height - box_h))
    x1, y1 = x0 + box_w, y0 + box_h
    if rng.random() < 0.5:
        vertices = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    else:
        vertices = [(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)]
    points = np.array(vertices, dtype=np.int32)
    return [float(v) for xy in vertices for v in xy], points


def make_synthetic_coco(root: Path,
                        num_images: int = 4,
                        image_size: Tuple[int, int] = (64, 96),
                        objects_per_image: int = 2,
                        seed: int = 0) -> Dict[str, str]:
    """Write ``root/images/*.png`` and ``root/annotations/instances.json``.

    Args:
        root: Dataset folder (created if missing).
        num_images: Number of images.
        image_size: (height, width) of every image.
        objects_per_image: Shapes drawn on each image.
        seed: Seed of the generator that draws images and shapes.

    Returns:
        ``data_root``, ``ann_file`` (relative to ``data_root``), ``img_prefix`` (relative) and
        ``ann_path`` (absolute), ready for mmdet's ``CocoDataset`` and ``CocoMetric``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    height, width = image_size
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        canvas = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
        for _ in range(objects_per_image):
            polygon, points = _random_shape(rng, height, width)
            colour = tuple(int(c) for c in rng.integers(150, 256, size=3))
            cv2.fillPoly(canvas, [points], colour)
            x_min, y_min = points.min(axis=0)
            x_max, y_max = points.max(axis=0)
            box = [float(x_min), float(y_min), float(x_max - x_min), float(y_max - y_min)]
            category = OBJECT_CATEGORIES[int(rng.integers(len(OBJECT_CATEGORIES)))]
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id, category_id=category['id'],
                     bbox=box, area=float(cv2.contourArea(points)), segmentation=[polygon],
                     iscrowd=0))
        file_name = f'{image_id:06d}.png'
        cv2.imwrite(str(root / 'images' / file_name), canvas)
        images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
    ann_path = root / 'annotations' / 'instances.json'
    ann_path.write_text(
        json.dumps(dict(images=images, annotations=annotations, categories=CATEGORIES)))
    return dict(data_root=str(root), ann_file='annotations/instances.json',
                img_prefix='images/', ann_path=str(ann_path))


def _scale_down(node: object, divisor: int) -> object:
    """Divide every ``scale``/``scales``/``crop_size`` in a (nested) pipeline by ``divisor``."""
    if isinstance(node, list):
        return [_scale_down(item, divisor) for item in node]
    if not isinstance(node, dict):
        return node
    shrunk = {key: _scale_down(value, divisor) for key, value in node.items()}
    for key in ('scale', 'crop_size'):
        if isinstance(node.get(key), (tuple, list)):
            shrunk[key] = tuple(side // divisor for side in node[key])
    if 'scales' in node:
        shrunk['scales'] = [tuple(side // divisor for side in scale) for scale in node['scales']]
    return type(node)(shrunk)


def fit_to_synthetic_coco(cfg: Config, dataset: Dict[str, str], work_dir: str,
                          scale_divisor: int = 8) -> Config:
    """Point a detection config at :func:`make_synthetic_coco` data and make it CPU-cheap.

    What changes: data roots and annotation files, every resize/crop scale divided by
    ``scale_divisor`` (the augmentation structure stays), batch 1 without workers, no
    pretrained checkpoint, fewer proposals and sampled RoIs, every test detection kept, one
    epoch without validation, no checkpoint saving. Everything else (model, heads, losses,
    optimizer, schedule) is the config's own. The heads keep SyncBN: without a process group,
    mmengine's runner reverts it to BN (a bare model needs ``revert_sync_batchnorm`` to train).

    Args:
        cfg: A loaded mmengine ``Config`` of configs/det.
        dataset: What :func:`make_synthetic_coco` returned.
        work_dir: The runner's work directory.
        scale_divisor: Factor by which the configured image scales shrink.

    Returns:
        The same ``cfg``, modified in place.
    """
    for loader_name in ('train_dataloader', 'test_dataloader'):
        loader = cfg[loader_name]
        loader.update(batch_size=1, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=dataset['data_root'], ann_file=dataset['ann_file'],
                              data_prefix=dict(img=dataset['img_prefix']),
                              pipeline=_scale_down(loader.dataset.pipeline, scale_divisor))
    cfg.test_evaluator.ann_file = dataset['ann_path']
    model = cfg.model
    model.backbone.init_cfg = None
    model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=64)
    for stage in model.train_cfg.rcnn:
        stage.sampler.num = 32
    model.test_cfg.rpn.update(nms_pre=100, max_per_img=32)
    # An untrained detector scores every class near 1/81, under the usual 0.05 threshold; keep
    # its boxes so that COCO evaluation has detections to score.
    model.test_cfg.rcnn.update(score_thr=0., max_per_img=10)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1, save_last=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.work_dir = work_dir
    return cfg
