from . import cue_conflict, imagenet_p, robustness, transforms  # noqa: F401
