from . import robustness, transforms  # noqa: F401
