from .frozen_teacher import FrozenTeacher, token_logits_of
from .token_labeling_classifier import TokenLabelingClassifier

__all__ = ['FrozenTeacher', 'TokenLabelingClassifier', 'token_logits_of']
