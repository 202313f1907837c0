from .frozen_teacher import FrozenTeacher
from .token_labeling_classifier import TokenLabelingClassifier

__all__ = ['FrozenTeacher', 'TokenLabelingClassifier']
