from .robustness_loop import RobustnessCellLoop

__all__ = ['RobustnessCellLoop']
