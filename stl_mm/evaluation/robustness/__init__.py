"""Robustness evaluation: one cell loop, one results file, one check of corrupted cells against
the clean set and one table renderer for ImageNet-C/A/R, Cityscapes-C, COCO-C and
Fashion-MNIST-C. The suites' modules (``imagenet``, ``cityscapes_c``, ``coco_c``,
``fashion_mnist_c``) import mmpretrain, mmseg or mmdet only when used."""
import stl_mm.engine.runners  # noqa: F401,I001  (registers RobustnessCellLoop)
from .cells import CLEAN, cell_name, check_cell, corruption_cells, parse_cell_name
from .results import RobustnessResults

__all__ = ['RobustnessResults', 'CLEAN', 'cell_name', 'check_cell', 'corruption_cells',
           'parse_cell_name']
