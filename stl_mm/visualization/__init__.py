"""Figures of what the models learn (the token labels of a teacher)."""
from .token_labels import draw_token_label_figure, visualize_token_labels

__all__ = ['draw_token_label_figure', 'visualize_token_labels']
