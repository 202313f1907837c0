"""The demo's Fashion-MNIST-C: the shared robustness core applied to the demo's models.

:func:`~stl_mm.evaluation.robustness.fashion_mnist_c.evaluate_fashion_mnist_c` owns the cells,
the per-image corruption seed, the results file and the summary; this module only says how the
demo's in-memory classifiers predict on raw images.
"""
from typing import TYPE_CHECKING, Dict, Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import Compose

from stl_mm.evaluation.robustness.fashion_mnist_c import evaluate_fashion_mnist_c
from stl_mm.evaluation.robustness.results import RobustnessResults

if TYPE_CHECKING:
    from stl_mm.apis.demo import DemoSizes

__all__ = ['evaluate_robustness', 'predict']


@torch.no_grad()
def predict(models: Dict[str, torch.nn.Module], pipeline: Compose, images: Sequence[np.ndarray],
            batch_size: int = 500) -> Dict[str, np.ndarray]:
    """Top-1 predictions of each model on raw images passed through ``pipeline``."""
    predictions = {name: [] for name in models}
    for start in range(0, len(images), batch_size):
        packed = [pipeline(dict(img=image)) for image in images[start:start + batch_size]]
        batch = [item['inputs'] for item in packed]
        for name, model in models.items():
            inputs = model.data_preprocessor(dict(inputs=batch), False)['inputs']
            logits = model.head.prediction_logits(model.extract_feat(inputs))
            predictions[name].append(logits.argmax(dim=1).numpy())
    return {name: np.concatenate(values) for name, values in predictions.items()}


def evaluate_robustness(models: Dict[str, torch.nn.Module], pipeline: Compose, dataset,
                        sizes: 'DemoSizes', seed: int,
                        results: Optional[RobustnessResults] = None) -> dict:
    """Clean and Fashion-MNIST-C top-1 of each model (see ``evaluate_fashion_mnist_c``).

    Args:
        models: Classifiers in eval mode by name.
        pipeline: The test pipeline, applied to every raw (and corrupted) image.
        dataset: Fashion-MNIST's test set without a pipeline (raw 28x28 grey arrays).
        sizes: ``clean_images`` (None: all) and ``corruption_images`` (the seeded subset).
        seed: Seed of the subsets and of the corruptions.
        results: The results file finished cells are recorded in (None: kept in memory).
    """
    return evaluate_fashion_mnist_c(lambda images: predict(models, pipeline, images),
                                    list(models), dataset, sizes.corruption_images, seed,
                                    clean_images=sizes.clean_images, results=results)
