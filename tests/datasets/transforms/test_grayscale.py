"""GrayToBGR: grey images become three identical channels; other shapes are refused."""
import numpy as np
import pytest

from stl_mm.datasets.transforms import GrayToBGR


@pytest.mark.parametrize('shape', [(5, 7), (5, 7, 1)])
def test_grey_image_becomes_three_identical_channels(shape):
    grey = np.arange(35, dtype=np.uint8).reshape(shape)
    results = GrayToBGR()(dict(img=grey))
    assert results['img'].shape == (5, 7, 3)
    assert results['img_shape'] == results['ori_shape'] == (5, 7)
    for channel in range(3):
        np.testing.assert_array_equal(results['img'][..., channel], grey.reshape(5, 7))


def test_colour_image_passes_unchanged_and_other_shapes_are_refused():
    colour = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(GrayToBGR()(dict(img=colour.copy()))['img'], colour)
    with pytest.raises(ValueError, match='HxW or HxWx1 grey image'):
        GrayToBGR()(dict(img=np.zeros((4, 6, 2), dtype=np.uint8)))


def test_registered_under_its_config_name():
    from mmpretrain.registry import TRANSFORMS

    import stl_mm  # noqa: F401
    assert TRANSFORMS.get('GrayToBGR') is GrayToBGR
