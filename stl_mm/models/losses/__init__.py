from .gumbel_token_label_loss import GumbelTokenLabelLoss

__all__ = ['GumbelTokenLabelLoss']
