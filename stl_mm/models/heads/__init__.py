from .token_labeling_head import TokenLabelingHead

__all__ = ['TokenLabelingHead']
