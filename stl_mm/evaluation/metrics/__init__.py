from .robustness import (ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, RobustnessAccuracy,
                         corruption_error, relative_corruption_error, summarize_robustness)

__all__ = ['ALEXNET_CLEAN_ERROR', 'ALEXNET_ERRORS', 'RobustnessAccuracy', 'corruption_error',
           'relative_corruption_error', 'summarize_robustness']
