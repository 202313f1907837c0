"""Image loading for pipelines shared by in-memory datasets and image files."""
import numpy as np
from mmcv.transforms import LoadImageFromFile

from stl_mm.registry import register


@register('TRANSFORMS', codebases=('mmpretrain', ))
class LoadImageFromFileOrArray(LoadImageFromFile):
    """``LoadImageFromFile`` that keeps an image the dataset already holds in memory.

    mmpretrain's ``MNIST`` and ``FashionMNIST`` give ``img`` arrays and no file, while the
    tools that start from an image file (mmpretrain's ``vis_cam.py``, a ``CustomDataset`` of
    image files) give only ``img_path``. With this step first, one test pipeline serves both:
    ``tools/test.py`` on the in-memory dataset and those tools on a file. A file is read
    exactly as by ``LoadImageFromFile`` (same arguments); an ``img`` given is kept (as
    float32 with ``to_float32=True``), with ``img_shape`` and ``ori_shape`` set from it.
    """

    def transform(self, results: dict) -> dict:
        """Read ``results['img_path']`` unless ``results['img']`` is already set."""
        if results.get('img') is None:
            return super().transform(results)
        img = np.asarray(results['img'])
        results['img'] = img.astype(np.float32) if self.to_float32 else img
        results['img_shape'] = results['ori_shape'] = img.shape[:2]
        return results
