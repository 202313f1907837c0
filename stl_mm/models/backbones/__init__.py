"""Backbones: FAN (ViT and Hybrid) for mmpretrain, mmsegmentation and mmdetection."""
from .fan import FAN

__all__ = ['FAN']
