"""A few small real image files in mmpretrain's CustomDataset layout, for runner tests."""
from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(root: Path, classes=('dark', 'light'), per_class: int = 4,
                      size: int = 40) -> Path:
    """Write ``per_class`` images per class under ``root/<class>/``; classes differ in brightness
    so a model can tell them apart."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = 60 + 120 * index
            pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f'{i}.png')
    return root
