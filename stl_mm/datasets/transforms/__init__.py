from .dual_view import TEACHER_IMG_KEY, DualView, PackDualViewInputs
from .grayscale import GrayToBGR
from .loading import LoadImageFromFileOrArray

__all__ = ['TEACHER_IMG_KEY', 'DualView', 'GrayToBGR', 'LoadImageFromFileOrArray',
           'PackDualViewInputs']
