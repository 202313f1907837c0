"""Checks shared by the models and the training hooks: option ranges and finite weights."""
import math
from typing import List, Mapping, Optional

import torch


def check_number(option: str, value: object, minimum: float = 0.0, positive: bool = False,
                 below: Optional[float] = None) -> float:
    """Refuse a loss option that is no finite number in its range, in the option's words.

    Args:
        option: The option as the config writes it, e.g. ``'token_loss.loss_weight'``.
        value: The value given.
        minimum: The smallest value allowed. Defaults to 0.
        positive: Exclude ``minimum`` itself (``> minimum`` instead of ``>=``).
        below: Exclusive upper bound, if any.

    Returns:
        The value as a float.
    """
    bound = f'> {minimum:g}' if positive else f'>= {minimum:g}'
    if below is not None:
        bound += f' and < {below:g}'
    number = float(value) if isinstance(value, (int, float)) and not isinstance(
        value, bool) else None
    if number is None or not math.isfinite(number) or number < minimum or (
            positive and number == minimum) or (below is not None and number >= below):
        raise ValueError(f'{option} must be a finite number {bound}, got {value!r}.')
    return number


def non_finite_tensors(state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Keys of the floating-point tensors of ``state_dict`` holding NaN or inf."""
    return [key for key, value in state_dict.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point()
            and not torch.isfinite(value).all()]
