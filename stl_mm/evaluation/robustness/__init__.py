"""Robustness evaluation: one cell loop, one results file, one check of corrupted cells against
the clean set and one table renderer for ImageNet-C/A/R, Cityscapes-C, COCO-C and
Fashion-MNIST-C. The suites' modules (``imagenet``, ``cityscapes_c``, ``coco_c``,
``fashion_mnist_c``) import mmpretrain, mmseg or mmdet only when used."""
from .results import RobustnessResults  # noqa: I001  (before the loop, which uses it)
from stl_mm.engine.runners import RobustnessCellLoop
from .cells import CLEAN, cell_name, check_cell, corruption_cells, parse_cell_name

__all__ = ['RobustnessResults', 'RobustnessCellLoop', 'CLEAN', 'cell_name', 'check_cell',
           'corruption_cells', 'parse_cell_name']
