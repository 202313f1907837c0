"""The ImageNet robustness suites (tools/analysis_tools/test_robustness.py) end to end on tiny
synthetic suites with a model whose predictions are known: each image is one solid colour and
the model names the class of the nearest colour.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from PIL import Image

from stl_mm.engine.runner_setup import prepare_config
from stl_mm.evaluation.robustness.imagenet import evaluate_imagenet_robustness, read_suite_specs

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'analysis_tools' / 'test_robustness.py'
SUITE_CONFIG = str(REPO_ROOT / 'configs' / 'robustness' / 'suites.py')

TENCH, GOLDFISH = 'n01440764', 'n01443537'  # class 0 (in neither A nor R), 1 (R only)
STINGRAY, JUNCO = 'n01498041', 'n01534433'  # classes 6 and 13 (in A and R)
SPOONBILL_A = 'n01558993'  # class 15 (A only)
COLOURS = {0: (200, 40, 40), 1: (40, 200, 40), 6: (40, 40, 200), 13: (200, 200, 40),
           15: (40, 200, 200)}
CLASS_OF = {TENCH: 0, GOLDFISH: 1, STINGRAY: 6, JUNCO: 13, SPOONBILL_A: 15}


@MODELS.register_module(force=True)
class ColourPassThroughBackbone(BaseModule):
    """Returns the image as its feature map, so that pooling gives its mean colour."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.))  # 1 after loading the checkpoint

    def forward(self, x: torch.Tensor) -> tuple:
        return (x * self.gain, )


MODEL_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=1000, mean=[0., 0., 0.],
                           std=[255., 255., 255.], to_rgb=True),
    backbone=dict(type='ColourPassThroughBackbone'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=3))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
test_dataloader = dict(batch_size=4, num_workers=0,
                       sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(type='WnidImageFolder', data_root='unused',
                                    pipeline=test_pipeline))
test_evaluator = dict(type='Accuracy')
test_cfg = dict()
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
log_level = 'WARNING'
"""


def _nearest_colour_checkpoint(path: Path) -> None:
    """A linear head that scores class k by -|c - colour_k|^2 up to a term shared by all k."""
    weight, bias = torch.zeros(1000, 3), torch.full((1000, ), -1e4)
    for label, colour in COLOURS.items():
        centre = torch.tensor(colour, dtype=torch.float) / 255
        weight[label], bias[label] = 2 * centre, -centre.square().sum()
    torch.save({'state_dict': {'backbone.gain': torch.tensor(1.), 'head.fc.weight': weight,
                               'head.fc.bias': bias}}, path)


def _solid(folder: Path, name: str, label: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((36, 40, 3), COLOURS[label], np.uint8)).save(folder / f'{name}.png')


def _images(folder: Path, colour_labels) -> None:
    for index, label in enumerate(colour_labels):
        _solid(folder, f'img{index}', label)


@pytest.fixture(scope='module')
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('robustness')
    # Clean val: tench x2 right; goldfish right, one painted as a junco (wrong) -> 75%.
    _images(root / 'imagenet' / 'val' / TENCH, [0, 0])
    _images(root / 'imagenet' / 'val' / GOLDFISH, [1, 13])
    # ImageNet-C: the clean classes and counts (2 tench, 2 goldfish) in every cell, the wrong
    # images painted as juncos.
    right_per_cell = {('fog', 1): 4, ('fog', 2): 3, ('contrast', 1): 2, ('contrast', 2): 1,
                      ('spatter', 1): 1, ('spatter', 2): 0}
    for (corruption, severity), right in right_per_cell.items():
        labels = [CLASS_OF[TENCH]] * 2 + [CLASS_OF[GOLDFISH]] * 2
        painted = [label if index < right else 13 for index, label in enumerate(labels)]
        cell = root / 'imagenet-c' / corruption / str(severity)
        _images(cell / TENCH, painted[:2])
        _images(cell / GOLDFISH, painted[2:])
    # ImageNet-A (classes 6, 13, 15 among ours). Restricted to A, a tench-coloured image is
    # nearest to the junco colour, a goldfish-coloured one too.
    _images(root / 'imagenet-a' / STINGRAY, [6, 0])  # right; wrong (-> junco)
    _images(root / 'imagenet-a' / JUNCO, [0, 13])  # right only thanks to the mask; right
    _images(root / 'imagenet-a' / SPOONBILL_A, [6])  # wrong (-> stingray)
    # ImageNet-R (classes 1, 6, 13 among ours); a tench-coloured goldfish -> junco.
    _images(root / 'imagenet-r' / GOLDFISH, [1, 0])  # right; wrong
    _images(root / 'imagenet-r' / STINGRAY, [6])  # right
    config = root / 'colour_model.py'
    config.write_text(MODEL_CONFIG)
    checkpoint = root / 'colour_model.pth'
    _nearest_colour_checkpoint(checkpoint)
    data_roots = [f'in1k={root / "imagenet"}', f'in-c={root / "imagenet-c"}',
                  f'in-a={root / "imagenet-a"}', f'in-r={root / "imagenet-r"}']
    return dict(root=root, config=str(config), checkpoint=str(checkpoint),
                data_roots=data_roots)


def _evaluate(world: dict, out: Path, suites=('in-c', ), corruptions=('fog', ),
              severities=(1, ), data_roots=(), checkpoint=None, on_the_fly=False,
              allow_incomplete=False, suite_config=SUITE_CONFIG) -> dict:
    """What the tool's main does, with the test's data roots first and overrides after."""
    cfg = prepare_config(world['config'], str(out.parent / 'work'))
    specs = read_suite_specs(str(suite_config), [*world['data_roots'], *data_roots], on_the_fly)
    evaluate_imagenet_robustness(cfg, world['config'], checkpoint or world['checkpoint'],
                                 str(out), list(suites), list(corruptions), list(severities),
                                 specs, on_the_fly=on_the_fly, allow_incomplete=allow_incomplete)
    return json.loads(out.read_text())


def _top1(results: dict) -> dict:
    return {name: cell['metrics']['robustness/top1'] for name, cell in results['cells'].items()}


def test_all_suites_give_the_hand_computed_numbers(world, tmp_path):
    out = tmp_path / 'results.json'
    results = _evaluate(world, out, ('in1k', 'in-c', 'in-a', 'in-r'),
                        ('fog', 'contrast', 'spatter'), (1, 2))
    assert _top1(results) == pytest.approx({
        'in1k': 75.0, 'in-a': 60.0, 'in-r': 200 / 3,  # in-a: 40% without the 200-class mask
        'in-c/fog/1': 100.0, 'in-c/fog/2': 75.0, 'in-c/contrast/1': 50.0,
        'in-c/contrast/2': 25.0, 'in-c/spatter/1': 25.0, 'in-c/spatter/2': 0.0})
    in_c_cells = [cell for name, cell in results['cells'].items() if name.startswith('in-c/')]
    assert all(cell['num_samples'] == cell['expected_samples'] == 4 for cell in in_c_cells)
    summary = results['summary']
    in_c = summary['in-c']
    ce_fog = 100 * (0.0 + 0.25) / (0.67474 + 0.7605)
    ce_contrast = 100 * (0.5 + 0.75) / (0.64548 + 0.7615)
    assert in_c['mCE'] == pytest.approx((ce_fog + ce_contrast) / 2)
    assert 'CE/spatter' not in in_c
    assert in_c['mCA'] == pytest.approx((87.5 + 37.5) / 2)
    assert in_c['mCA_all'] == pytest.approx((87.5 + 37.5 + 12.5) / 3)
    assert in_c['retention'] == pytest.approx(100 * 62.5 / 75)
    assert summary['in-a']['retention'] == pytest.approx(80.0)
    assert results['selection'] == dict(suites=['in1k', 'in-c', 'in-a', 'in-r'],
                                        corruptions=['fog', 'contrast', 'spatter'],
                                        severities=[1, 2],
                                        v2_variants=['matched-frequency', 'threshold-0.7',
                                                     'top-images'])
    inputs = results['inputs']
    assert inputs['data']['in-c'] == dict(root=str(world['root'] / 'imagenet-c'), mode='files')
    assert len(inputs['checkpoint_sha256']) == 64 and len(inputs['config_sha256']) == 64
    markdown = out.with_suffix('.md').read_text()
    for heading in ('## Overview', '## ImageNet-1K (clean)', '## ImageNet-C', '## ImageNet-A',
                    '## ImageNet-R'):
        assert heading in markdown
    assert '| fog | 100.00 | 75.00 | 87.50 |' in markdown
    assert not list(tmp_path.glob('.tmp-*'))  # atomic writes leave no temporary behind


def test_resume_skips_recorded_cells_and_follows_the_checkpoint_content(world, tmp_path):
    out = tmp_path / 'results.json'
    first = _evaluate(world, out)
    assert list(first['cells']) == ['in-c/fog/1']
    first['cells']['in-c/fog/1']['metrics']['robustness/top1'] = 12.0  # not rerun
    out.write_text(json.dumps(first))
    # The same content at another path is the same checkpoint: it resumes.
    moved = tmp_path / 'moved.pth'
    moved.write_bytes(Path(world['checkpoint']).read_bytes())
    second = _evaluate(world, out, severities=(1, 2), checkpoint=str(moved))
    assert _top1(second) == pytest.approx({'in-c/fog/1': 12.0, 'in-c/fog/2': 75.0})
    assert second['summary']['in-c']['top1/fog'] == pytest.approx((12.0 + 75.0) / 2)
    assert second['about']['checkpoint'] == str(moved)

    # Another checkpoint written at the same path: refused, naming the fingerprint.
    state = torch.load(moved, weights_only=True)
    state['state_dict']['head.fc.bias'][0] += 1
    torch.save(state, moved)
    with pytest.raises(SystemExit, match=r'(?s)checkpoint_sha256: recorded .*another --out'):
        _evaluate(world, out, checkpoint=str(moved))


def test_other_data_roots_or_modes_are_refused(world, tmp_path):
    out = tmp_path / 'results.json'
    _evaluate(world, out)
    copy_of_in_c = tmp_path / 'imagenet-c-copy'
    shutil.copytree(world['root'] / 'imagenet-c', copy_of_in_c)
    with pytest.raises(SystemExit, match=r'data\.in-c\.root: recorded'):
        _evaluate(world, out, data_roots=[f'in-c={copy_of_in_c}'])
    with pytest.raises(SystemExit, match=r"data\.in-c\.mode: recorded 'files', now 'on_the_fly'"):
        _evaluate(world, out, on_the_fly=True,
                  data_roots=[f'in-c={world["root"] / "imagenet"}'])
    # Identical inputs still resume.
    assert list(_evaluate(world, out)['cells']) == ['in-c/fog/1']


def test_a_cell_missing_a_class_folder_is_refused_or_shown_with_its_count(world, tmp_path):
    partial = tmp_path / 'imagenet-c'
    shutil.copytree(world['root'] / 'imagenet-c', partial)
    shutil.rmtree(partial / 'fog' / '2' / GOLDFISH)
    out = tmp_path / 'results.json'
    roots = [f'in-c={partial}']
    with pytest.raises(SystemExit, match=rf'(?s)fog/2 .*2 of 4 images.*1 class folders missing '
                                         rf'\({GOLDFISH}\).*--allow-incomplete'):
        _evaluate(world, out, severities=(1, 2), data_roots=roots)
    assert not out.exists()  # refused before anything was evaluated

    results = _evaluate(world, out, severities=(1, 2), data_roots=roots, allow_incomplete=True)
    cell = results['cells']['in-c/fog/2']
    assert (cell['num_samples'], cell['expected_samples']) == (2, 4)
    assert '(2/4 images)' in out.with_suffix('.md').read_text()


def test_on_the_fly_corruptions(world, tmp_path):
    # Brightness at severity 1 brightens each solid colour without moving it nearer to another
    # class colour, so the clean answers (75%) survive, after resizing, corruption and JPEG.
    out = tmp_path / 'results.json'
    results = _evaluate(world, out, corruptions=('brightness', ), on_the_fly=True,
                        data_roots=[f'in-c={world["root"] / "imagenet"}'])
    cell = results['cells']['in-c/brightness/1']
    assert cell['num_samples'] == 4 and cell['metrics']['robustness/top1'] == pytest.approx(75.0)
    assert results['inputs']['data']['in-c'] == dict(root=str(world['root'] / 'imagenet'),
                                                     mode='on_the_fly', seed=0)
    # Another corruption recipe in the suites file is another input, too.
    suites = tmp_path / 'suites.py'
    suites.write_text(Path(SUITE_CONFIG).read_text().replace('jpeg_quality=85',
                                                             'jpeg_quality=95'))
    with pytest.raises(SystemExit, match='suites_sha256: recorded'):
        _evaluate(world, out, corruptions=('brightness', ), on_the_fly=True,
                  data_roots=[f'in-c={world["root"] / "imagenet"}'], suite_config=suites)


def test_the_tool_refuses_bad_arguments(world):
    result = subprocess.run([sys.executable, str(TOOL), world['config'], world['checkpoint'],
                             '--corruptions', 'rain'], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'rain'" in result.stderr
