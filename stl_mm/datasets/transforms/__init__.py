from .dual_view import TEACHER_IMG_KEY, DualView, PackDualViewInputs
from .grayscale import GrayToBGR

__all__ = ['TEACHER_IMG_KEY', 'DualView', 'GrayToBGR', 'PackDualViewInputs']
