from .perturbation import PerturbationStability, summarize_perturbations
from .robustness import (ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, RobustnessAccuracy,
                         corruption_error, relative_corruption_error, summarize_robustness)
from .shape_bias import ShapeBias

__all__ = ['ALEXNET_CLEAN_ERROR', 'ALEXNET_ERRORS', 'RobustnessAccuracy', 'corruption_error',
           'relative_corruption_error', 'summarize_robustness', 'PerturbationStability',
           'summarize_perturbations', 'ShapeBias']
