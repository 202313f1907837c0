"""Figures of what the models learn: the token labels of a teacher, the attention of a FAN."""
from .attention import draw_attention_figure, visualize_attention
from .token_labels import draw_token_label_figure, visualize_token_labels

__all__ = ['draw_attention_figure', 'draw_token_label_figure', 'visualize_attention',
           'visualize_token_labels']
