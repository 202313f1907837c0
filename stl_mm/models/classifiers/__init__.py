from .token_labeling_classifier import TokenLabelingClassifier

__all__ = ['TokenLabelingClassifier']
