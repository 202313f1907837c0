"""`import stl_mm` registers its modules into all three OpenMMLab codebases."""
import subprocess
import sys

import pytest

import stl_mm

EVERY_CODEBASE_MODEL = ['FAN']
CLASSIFICATION_MODELS = ['TokenLabelingClassifier', 'TokenLabelingHead', 'GumbelTokenLabelLoss',
                         'TokenLabelingDataPreprocessor']


@pytest.mark.parametrize('codebase', ['mmpretrain', 'mmseg', 'mmdet'])
def test_fan_is_registered_in_every_codebase(codebase):
    registry = stl_mm.REGISTRIES[codebase].MODELS
    for name in EVERY_CODEBASE_MODEL:
        assert registry.get(name) is not None, f'{name} missing from {codebase}.MODELS'
    from stl_mm.models.backbones.fan import FAN
    assert registry.get('FAN') is FAN


def test_classification_modules_are_registered_in_mmpretrain():
    from mmpretrain.registry import HOOKS, MODELS, TRANSFORMS
    for name in CLASSIFICATION_MODELS:
        assert MODELS.get(name) is not None, name
    assert HOOKS.get('FrozenTeacherHook') is not None
    assert TRANSFORMS.get('DualView') is not None


def test_all_codebases_available_here():
    assert stl_mm.DISABLED_FEATURES == {}


def test_config_scope_builds_fan_through_each_registry():
    from mmengine.registry import DefaultScope
    for scope in ('mmpretrain', 'mmseg', 'mmdet'):
        registry = stl_mm.REGISTRIES[scope].MODELS
        with DefaultScope.overwrite_default_scope(scope):
            assert registry.get(f'{scope}.FAN') is registry.get('FAN')


def test_missing_codebase_disables_its_features_with_a_clear_message():
    # A fresh interpreter in which mmdet cannot be imported.
    code = (
        'import sys; sys.modules["mmdet"] = None\n'
        'import warnings; warnings.simplefilter("always")\n'
        'with warnings.catch_warnings(record=True) as caught:\n'
        '    import stl_mm\n'
        'print(sorted(stl_mm.REGISTRIES)); print(stl_mm.DISABLED_FEATURES["mmdet"])\n'
        'print(any("mmdet" in str(w.message) for w in caught))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    registries, message, warned = out.stdout.strip().splitlines()
    assert registries == "['mmpretrain', 'mmseg']"
    assert 'object detection' in message and "pip install 'mmdet==3.3.0'" in message
    assert warned == 'True'
