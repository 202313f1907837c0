from .dual_view import TEACHER_IMG_KEY, DualView, PackDualViewInputs

__all__ = ['TEACHER_IMG_KEY', 'DualView', 'PackDualViewInputs']
