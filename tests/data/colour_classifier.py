"""A 1000-class ImageNet classifier whose predictions are known, for end-to-end suite tests in
this process and in ``torch.distributed.run`` subprocesses (the model config imports this
module): the backbone passes the image through, pooling gives its mean colour, and the head
scores class ``k`` by ``-sharpness * |colour - COLOURS[k]|^2`` (up to a term shared by all
classes); classes without a colour score far below. Also the writers of solid-colour trees laid
out like the ImageNet-P and cue-conflict releases."""
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS

# ImageNet-1K classes of five cue-conflict categories, with well separated colours.
KNIFE, CAT, DOG, CLOCK, OVEN = 499, 281, 207, 409, 766
COLOURS = {KNIFE: (200, 40, 40), CAT: (40, 200, 40), DOG: (40, 40, 200),
           CLOCK: (200, 200, 40), OVEN: (40, 200, 200)}
# Two frame colours whose five best classes are unambiguous (squared distances to the class
# colours differ by thousands): A ranks knife, clock, cat, dog, oven; B cat, clock, oven,
# knife, dog.
FRAME_A, FRAME_B = (200, 60, 40), (60, 200, 40)
TENCH, GOLDFISH = 'n01440764', 'n01443537'
A, B = FRAME_A, FRAME_B
# Three sequences of each kind and their flip probability (percent) and top-5 distance, worked
# out by hand: the top-1 of A is knife, of B cat, and their top-5 distance is 8 either way
# (|4-1| + 0 + |1-3| + |5-4| + |3-5|). The figures hold for any nearest-colour classifier with
# these five class colours (tests/evaluation/robustness/test_imagenet.py's too).
TEMPORAL_VIDEOS = {f'{TENCH}/v1': [A, A, B, B, A],  # flips 0,1,0,1; distances 0,8,0,8
                   f'{GOLDFISH}/v2': [B] * 5, f'{GOLDFISH}/v3': [A] * 5}
TEMPORAL_FIGURES = (100 * (2 / 4) / 3, (16 / 4) / 3)
# Noise frames are compared with the first one.
NOISE_VIDEOS = {f'{TENCH}/v1': [A, B, A, A, B],  # flips 1,0,0,1
                f'{GOLDFISH}/v2': [B, A, A, A, A],  # flips 1,1,1,1
                f'{GOLDFISH}/v3': [A] * 5}
NOISE_FIGURES = (100 * (2 / 4 + 1) / 3, (16 / 4 + 32 / 4) / 3)
# Sharp enough that a dog-coloured image's dog probability, averaged over the 109 dog classes,
# beats the single oven class (exp(-0.39 * 30) << 1 / 109), yet soft enough that float32
# probabilities of all five coloured classes stay above zero, so their order is the top-5.
SHARPNESS = 30.

MODEL_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['stl_mm', 'colour_classifier'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=1000, mean=[0., 0., 0.],
                           std=[255., 255., 255.], to_rgb=True),
    backbone=dict(type='NearestColourBackbone'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=3))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
test_dataloader = dict(batch_size=4, num_workers=0,
                       sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(type='WnidImageFolder', data_root='unused',
                                    pipeline=test_pipeline))
test_evaluator = dict(type='Accuracy')
test_cfg = dict()
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
log_level = 'WARNING'
"""


@MODELS.register_module(force=True)
class NearestColourBackbone(BaseModule):
    """Returns the image as its feature map, so that pooling gives its mean colour."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.))  # 1 after loading the checkpoint

    def forward(self, x: torch.Tensor) -> tuple:
        return (x * self.gain, )


def write_model(folder: Path, colours: Optional[Dict[int, Tuple[int, int, int]]] = None,
                sharpness: float = SHARPNESS) -> Tuple[str, str]:
    """The config and checkpoint of the nearest-colour classifier, written into ``folder``.

    Args:
        folder: Where ``colour_model.py`` and ``colour_model.pth`` go.
        colours: Class -> RGB colour (default :data:`COLOURS`).
        sharpness: The scale of the scores (only the probabilities depend on it).
    """
    weight, bias = torch.zeros(1000, 3), torch.full((1000, ), -1e6)
    for label, colour in (COLOURS if colours is None else colours).items():
        centre = torch.tensor(colour, dtype=torch.float) / 255
        weight[label], bias[label] = 2 * sharpness * centre, -sharpness * centre.square().sum()
    checkpoint = folder / 'colour_model.pth'
    torch.save({'state_dict': {'backbone.gain': torch.tensor(1.), 'head.fc.weight': weight,
                               'head.fc.bias': bias}}, checkpoint)
    config = folder / 'colour_model.py'
    config.write_text(MODEL_CONFIG)
    return str(config), str(checkpoint)


def solid(colour, size: Tuple[int, int] = (32, 32)) -> np.ndarray:
    """A solid RGB image."""
    return np.full((*size, 3), colour, np.uint8)


def write_video(path: Path, colours: Sequence[Tuple[int, int, int]]) -> None:
    """An MP4 video (as the ImageNet-P release stores sequences) of solid 32x32 RGB frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 1, (32, 32))
    for colour in colours:
        writer.write(np.ascontiguousarray(solid(colour)[..., ::-1]))
    writer.release()


def write_imagenet_p_tree(root: Path, videos: Dict[str, Dict[str, Sequence]]) -> None:
    """``root/<perturbation>/<wnid>/<name>.mp4`` from ``{perturbation: {'<wnid>/<name>':
    frame colours}}``."""
    for perturbation, sequences in videos.items():
        for name, colours in sequences.items():
            write_video(root / perturbation / f'{name}.mp4', colours)


def write_stimuli(root: Path, stimuli: Dict[str, Tuple[int, int, int]]) -> None:
    """Solid PNG stimuli ``root/<shape>/<shape><n>-<texture><m>.png`` from ``{name: colour}``."""
    from PIL import Image
    for name, colour in stimuli.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(solid(colour)).save(root / name)
