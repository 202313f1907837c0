"""The backbone of the robustness tests' colour model, importable by every process of a
multi-process run (``custom_imports``; tests/data is on the test path)."""
import torch
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS


@MODELS.register_module(force=True)
class ColourPassThroughBackbone(BaseModule):
    """Returns the image as its feature map, so that pooling gives its mean colour."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.))  # 1 after loading the checkpoint

    def forward(self, x: torch.Tensor) -> tuple:
        return (x * self.gain, )
