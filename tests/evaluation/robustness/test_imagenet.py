"""The ImageNet robustness suites (tools/analysis_tools/test_robustness.py) end to end on tiny
synthetic suites with a model whose predictions are known: each image is one solid colour and
the model names the class of the nearest colour. ImageNet-V2, -Sketch and -ReaL are laid out
exactly like their releases (every class folder, release file names, a 50,000-entry real.json).
"""
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from colour_classifier import (NOISE_FIGURES, NOISE_VIDEOS, TEMPORAL_FIGURES, TEMPORAL_VIDEOS,
                               write_imagenet_p_tree, write_model, write_stimuli)
from PIL import Image

from stl_mm.datasets.robustness import IMAGENET_V2_VARIANTS, IMAGENET_WNIDS
from stl_mm.engine.runner_setup import prepare_config
from stl_mm.evaluation.metrics.perturbation import IMAGENET_P_PERTURBATIONS
from stl_mm.evaluation.robustness.imagenet import (MODEL_CARD_FORMAT,
                                                   evaluate_imagenet_robustness,
                                                   read_suite_specs)

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'analysis_tools' / 'test_robustness.py'
SUITE_CONFIG = str(REPO_ROOT / 'configs' / 'robustness' / 'suites.py')

TENCH, GOLDFISH = 'n01440764', 'n01443537'  # class 0 (in neither A nor R), 1 (R only)
STINGRAY, JUNCO = 'n01498041', 'n01534433'  # classes 6 and 13 (in A and R)
SPOONBILL_A = 'n01558993'  # class 15 (A only)
COLOURS = {0: (200, 40, 40), 1: (40, 200, 40), 6: (40, 40, 200), 13: (200, 200, 40),
           15: (40, 200, 200)}
CLASS_OF = {TENCH: 0, GOLDFISH: 1, STINGRAY: 6, JUNCO: 13, SPOONBILL_A: 15}


def _solid(folder: Path, name: str, label: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((36, 40, 3), COLOURS[label], np.uint8)).save(folder / f'{name}.png')


def _images(folder: Path, colour_labels) -> None:
    for index, label in enumerate(colour_labels):
        _solid(folder, f'img{index}', label)


def _jpeg(path: Path, label: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), COLOURS[label], np.uint8)).save(path, quality=95)


# ImageNet-V2 and -Sketch: every one of the 1000 class folders holds one image painted as a
# tench (right only in the tench folder), except the folders listed, which hold these colours.
V2_SPECIAL = {
    'matched-frequency': {0: [0], 1: [1], 6: [6], 13: [13], 15: [15]},  # 5 right of 1000
    'threshold-0.7': {0: [0], 1: [1], 6: [6], 13: [0], 15: [15]},  # 4 right of 1000
    'top-images': {label: [label, label] for label in (0, 1, 6, 13, 15)},  # 10 of 1005
}
SKETCH_SPECIAL = {0: [0, 0], 1: [1, 13], 6: [6], 13: [13], 15: [15, 6]}  # 6 right of 1003
# ImageNet-ReaL: (val number, wnid folder, painted as, real.json entry). 1, 2, 3, 5, 6 are
# scored (4 and 7 have no ReaL label): ReaL right 1, 2, 3, 6 (80%); original right 1, 5, 6
# (60%); over all seven the original top-1 is 4/7.
REAL_IMAGES = [(1, TENCH, 0, [0]), (2, TENCH, 1, [0, 1]), (3, GOLDFISH, 13, [13]),
               (4, GOLDFISH, 1, []), (5, JUNCO, 13, [6]), (6, STINGRAY, 6, [6, 13]),
               (7, STINGRAY, 0, [])]
CLEAN_TOP1 = 75.0
BATTERY_TOP1 = {  # the hand-computed figures of the new suites' cells
    'in-v2/matched-frequency': 0.5, 'in-v2/threshold-0.7': 0.4,
    'in-v2/top-images': 100 * 10 / 1005, 'in-sketch': 100 * 6 / 1003, 'in-real': 60.0}


def _class_folder_tree(root: Path, folder_name, special: dict, file_name) -> None:
    for label in range(1000):
        folder = root / folder_name(label)
        for index, colour in enumerate(special.get(label, [0])):
            _jpeg(folder / file_name(label, index), colour)


def _imagenet_v2(root: Path) -> None:
    for variant, folder in IMAGENET_V2_VARIANTS.items():
        _class_folder_tree(
            root / folder, str, V2_SPECIAL[variant],
            lambda label, index: hashlib.sha1(f'{variant}{label}/{index}'.encode()).hexdigest()
            + '.jpeg')


def _imagenet_sketch(root: Path) -> None:
    _class_folder_tree(root, lambda label: IMAGENET_WNIDS[label], SKETCH_SPECIAL,
                       lambda label, index: f'sketch_{index}.JPEG')


def _real_json(path: Path, entries) -> None:
    labels = [[] for _ in range(50000)]
    for number, _, _, real in entries:
        labels[number - 1] = real
    path.write_text(json.dumps(labels))


def _imagenet_real(root: Path) -> None:
    for number, wnid, painted, _ in REAL_IMAGES:
        _jpeg(root / 'val' / wnid / f'ILSVRC2012_val_{number:08d}.JPEG', painted)
    _real_json(root / 'real.json', REAL_IMAGES)


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
    _imagenet_v2(root / 'imagenetv2')
    _imagenet_sketch(root / 'sketch')
    _imagenet_real(root / 'imagenet-real')
    # Scores -|c - colour_k|^2: the probabilities the shape-bias figures below were worked out
    # with.
    config, checkpoint = write_model(root, COLOURS, sharpness=1.)
    # ImageNet-P (the 10 perturbations) and cue-conflict stimuli: the sequences of
    # tests/data/colour_classifier.py (same class colours, so the same figures); every stimulus
    # is decided 'bird' (junco and robin are the only coloured classes of the 16 categories).
    write_imagenet_p_tree(root / 'imagenet-p', {
        p: NOISE_VIDEOS if p.endswith('noise') else TEMPORAL_VIDEOS
        for p in IMAGENET_P_PERTURBATIONS})
    write_stimuli(root / 'cue-conflict', {'bird/bird1-cat1.png': COLOURS[13],  # shape
                                          'cat/cat1-bird1.png': COLOURS[15],  # texture
                                          'cat/cat2-bird2.png': COLOURS[0]})  # texture
    data_roots = [f'in1k={root / "imagenet"}', f'in-c={root / "imagenet-c"}',
                  f'in-a={root / "imagenet-a"}', f'in-r={root / "imagenet-r"}',
                  f'in-v2={root / "imagenetv2"}', f'in-sketch={root / "sketch"}',
                  f'in-real={root / "imagenet-real"}', f'in-p={root / "imagenet-p"}',
                  f'shape-bias={root / "cue-conflict"}']
    return dict(root=root, config=str(config), checkpoint=str(checkpoint),
                data_roots=data_roots)


def _evaluate(world: dict, out: Path, suites=('in-c', ), corruptions=('fog', ),
              severities=(1, ), data_roots=(), checkpoint=None, on_the_fly=False,
              allow_incomplete=False, suite_config=SUITE_CONFIG, **kwargs) -> dict:
    """What the tool's main does, with the test's data roots first and overrides after."""
    cfg = prepare_config(world['config'], str(out.parent / 'work'))
    cfg.test_dataloader.batch_size = 64  # the 1000-folder trees in few iterations
    specs = read_suite_specs(str(suite_config), [*world['data_roots'], *data_roots], on_the_fly)
    evaluate_imagenet_robustness(cfg, world['config'], checkpoint or world['checkpoint'],
                                 str(out), list(suites), list(corruptions), list(severities),
                                 specs, on_the_fly=on_the_fly, allow_incomplete=allow_incomplete,
                                 **kwargs)
    return json.loads(out.read_text())


def _tool_arguments(world: dict, out: Path, *args) -> list:
    return [world['config'], world['checkpoint'], '--out', str(out), '--work-dir',
            str(out.parent / 'work'), '--data-root', *world['data_roots'],
            '--cfg-options', 'test_dataloader.batch_size=64', *args]


def _top1(results: dict) -> dict:
    return {name: cell['metrics']['robustness/top1'] for name, cell in results['cells'].items()
            if 'robustness/top1' in cell['metrics']}


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


def _load_tool():
    spec = importlib.util.spec_from_file_location('test_robustness_tool', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_the_whole_battery_by_default(world, tmp_path, capsys):
    """The tool's one command (no --suites) runs every suite on trees laid out like the
    releases and gives the hand-computed figures, tables and model card."""
    out = tmp_path / 'battery.json'
    _load_tool().main(_tool_arguments(world, out, '--corruptions', 'fog', 'contrast', 'spatter',
                                      '--severities', '1', '2'))
    results = json.loads(out.read_text())
    assert _top1(results) == pytest.approx({
        'in1k': CLEAN_TOP1, 'in-a': 60.0, 'in-r': 200 / 3, 'in-c/fog/1': 100.0,
        'in-c/fog/2': 75.0, 'in-c/contrast/1': 50.0, 'in-c/contrast/2': 25.0,
        'in-c/spatter/1': 25.0, 'in-c/spatter/2': 0.0, **BATTERY_TOP1})
    cells = results['cells']
    assert {name: cell['num_samples'] for name, cell in cells.items() if name in BATTERY_TOP1} \
        == {'in-v2/matched-frequency': 1000, 'in-v2/threshold-0.7': 1000,
            'in-v2/top-images': 1005, 'in-sketch': 1003, 'in-real': 5}
    assert cells['in-real']['metrics']['robustness/real_top1'] == pytest.approx(80.0)
    summary = results['summary']
    assert summary['in-real'] == pytest.approx(dict(real_top1=80.0, top1=60.0, images=5))
    assert summary['in-v2']['top1/top-images'] == pytest.approx(100 * 10 / 1005)
    assert summary['in-v2']['retention/matched-frequency'] == pytest.approx(100 * 0.5 / 75)
    assert summary['in-sketch'] == pytest.approx(dict(top1=600 / 1003,
                                                      retention=100 * (600 / 1003) / 75))
    assert results['selection']['suites'] == ['in1k', 'in-c', 'in-a', 'in-r', 'in-v2',
                                              'in-sketch', 'in-real', 'in-p', 'shape-bias']
    for perturbation in IMAGENET_P_PERTURBATIONS:
        figures = NOISE_FIGURES if perturbation.endswith('noise') else TEMPORAL_FIGURES
        assert (summary['in-p'][f'FP/{perturbation}'],
                summary['in-p'][f'T5D/{perturbation}']) == pytest.approx(figures), perturbation
    assert summary['shape-bias']['shape_bias'] == pytest.approx(100 / 3)
    real_json = world['root'] / 'imagenet-real' / 'real.json'
    assert results['inputs']['data']['in-real'] == dict(
        root=str(world['root'] / 'imagenet-real'), mode='files', real_json=str(real_json),
        real_json_sha256=hashlib.sha256(real_json.read_bytes()).hexdigest())

    printed = capsys.readouterr().out
    overview = printed.splitlines()[printed.splitlines().index('Overview') + 1]
    assert re.split(r'\s{2,}', overview.strip()) == [
        'clean', 'IN-C mCA', 'IN-C mCE', 'retention', 'IN-A', 'IN-R', 'IN-V2', 'IN-V2 t0.7',
        'IN-V2 top', 'IN-Sketch', 'ReaL', 'IN-P mFR', 'IN-P mT5D', 'shape bias']
    markdown = out.with_suffix('.md').read_text()
    assert '| matched-frequency | 0.50 | 0.67 |' in markdown
    assert '| ReaL top-1 | original top-1 | images |' in markdown
    assert '| 80.00 | 60.00 | 5 |' in markdown and '## ImageNet-Sketch' in markdown
    assert 'ImageNet-ReaL: top-1 in the reassessed label set' in markdown
    assert 'ImageNet-A: the 1000-way output restricted to its 200 classes.' in markdown

    card = json.loads((tmp_path / 'battery.card.json').read_text())
    assert card['format'] == MODEL_CARD_FORMAT
    assert card['model']['name'] == 'colour_model'
    assert card['checkpoint'] == dict(path=world['checkpoint'], use_ema=True,
                                      sha256=results['inputs']['checkpoint_sha256'])
    assert card['clean_acc'] == pytest.approx(CLEAN_TOP1)
    assert card['corruptions_acc'] == pytest.approx(summary['in-c']['mCA'])
    assert card['corruptions_mce'] == pytest.approx(summary['in-c']['mCE'])
    assert card['corruptions_complete'] is False  # 3 corruptions at 2 severities
    assert set(card['suites']) == set(summary)
    assert card['suites']['in-real'] == dict(title='ImageNet-ReaL', **summary['in-real'])
    assert card['data']['in-sketch']['root'] == str(world['root'] / 'sketch')
    assert card['results_file'] == str(out) and card['selection'] == results['selection']
    assert set(card['software']) == {'stl_mm', 'torch', 'mmpretrain', 'mmengine'}
    assert card['date'].endswith('+00:00')


def test_two_cpu_ranks_give_the_single_process_figures(world, tmp_path):
    """Two gloo ranks split the images, frames and stimuli (odd counts are padded by the
    sampler) and record the figures one process gives; padded duplicates do not count (the
    ImageNet-P and shape-bias metrics key their samples)."""
    out = tmp_path / 'two_ranks.json'
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / 'tests' / 'data'),
                                           os.environ.get('PYTHONPATH', '')]))
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
         '--master_port', '29541', str(TOOL),
         *_tool_arguments(world, out, '--suites', 'in1k', 'in-v2', 'in-sketch', 'in-real',
                          'in-p', 'shape-bias', '--v2-variants', 'matched-frequency',
                          'top-images', '--perturbations', 'rotate', 'gaussian_noise',
                          '--launcher', 'pytorch')],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    results = json.loads(out.read_text())
    expected = {name: BATTERY_TOP1[name] for name in ('in-v2/matched-frequency',
                                                      'in-v2/top-images', 'in-sketch',
                                                      'in-real')}
    assert _top1(results) == pytest.approx(dict(in1k=CLEAN_TOP1, **expected))
    assert results['cells']['in-real']['metrics']['robustness/real_top1'] == pytest.approx(80.0)
    assert {name: cell['num_samples'] for name, cell in results['cells'].items()} == {
        'in1k': 4, 'in-v2/matched-frequency': 1000, 'in-v2/top-images': 1005,
        'in-sketch': 1003, 'in-real': 5, 'in-p/rotate': 15, 'in-p/gaussian_noise': 15,
        'shape-bias': 3}
    in_p = results['summary']['in-p']
    assert (in_p['FP/rotate'], in_p['T5D/rotate']) == pytest.approx(TEMPORAL_FIGURES)
    assert (in_p['FP/gaussian_noise'], in_p['T5D/gaussian_noise']) == pytest.approx(
        NOISE_FIGURES)
    assert results['summary']['shape-bias']['shape_bias'] == pytest.approx(100 / 3)
    assert out.with_suffix('.card.json').is_file() and out.with_suffix('.md').is_file()


def test_bad_trees_are_refused_before_anything_runs(world, tmp_path):
    out = tmp_path / 'results.json'
    v2 = tmp_path / 'v2' / IMAGENET_V2_VARIANTS['matched-frequency']
    _jpeg(v2 / '1000' / 'a.jpeg', 0)
    with pytest.raises(SystemExit, match=r'(?s)ImageNet-V2 cannot be read: .*1000 is not a class '
                                         r'folder.*--data-root in-v2=PATH'):
        _evaluate(world, out, ('in1k', 'in-v2'), data_roots=[f'in-v2={tmp_path / "v2"}'])
    sketch = tmp_path / 'sketch'
    _jpeg(sketch / TENCH / 'sketch_0.JPEG', 0)
    with pytest.raises(SystemExit, match=r'images of 1 of the 1000 classes; 999 class folders'):
        _evaluate(world, out, ('in-sketch', ), data_roots=[f'in-sketch={sketch}'])
    real = tmp_path / 'real'
    shutil.copytree(world['root'] / 'imagenet-real', real)
    (real / 'real.json').write_text(json.dumps([[0]] * 49999))
    with pytest.raises(SystemExit, match=r'holds 49999 entries.*one list per ILSVRC-2012 val'):
        _evaluate(world, out, ('in-real', ), data_roots=[f'in-real={real}'])
    assert not out.exists()


def test_another_real_json_is_another_input(world, tmp_path):
    real = tmp_path / 'real'
    shutil.copytree(world['root'] / 'imagenet-real', real)
    out = tmp_path / 'results.json'
    roots = [f'in-real={real}']
    assert _top1(_evaluate(world, out, ('in-real', ), data_roots=roots)) == {'in-real': 60.0}
    _real_json(real / 'real.json', [entry[:3] + ([1], ) if entry[0] == 5 else entry
                                    for entry in REAL_IMAGES])
    with pytest.raises(SystemExit, match=r'data\.in-real\.real_json_sha256: recorded'):
        _evaluate(world, out, ('in-real', ), data_roots=roots)


def test_model_card_from_a_results_file_alone():
    from stl_mm.compat.imagecorruptions import BENCHMARK_CORRUPTIONS
    from stl_mm.evaluation.robustness.imagenet import model_card
    results = dict(inputs=dict(checkpoint_sha256='ab' * 32, config_sha256='cd' * 32,
                               use_ema=False, data={'in-c': dict(root='/c', mode='files'),
                                                    'in-a': dict(root='/a', mode='files')}),
                   about=dict(checkpoint='/w/fan.pth', config='/c/fan_b_student.py'),
                   selection=dict(suites=['in-c'], severities=[1, 2, 3, 4, 5],
                                  corruptions=[*BENCHMARK_CORRUPTIONS, 'spatter']),
                   summary={'in-c': dict(mCA=40.0, mCE=60.0)})
    card = model_card(results)
    assert card['model']['name'] == 'fan_b_student' and card['checkpoint']['use_ema'] is False
    assert (card['clean_acc'], card['corruptions_acc'], card['corruptions_mce']) == (
        None, 40.0, 60.0)
    assert card['corruptions_complete'] is True  # all 15 at 1..5 (an extra does not matter)
    assert card['data'] == {'in-c': dict(root='/c', mode='files')}  # the suites that ran
    results['selection']['severities'] = [1, 2, 3, 4]
    assert model_card(results)['corruptions_complete'] is False


def test_which_suites_are_made_on_the_fly():
    assert read_suite_specs(SUITE_CONFIG, [], True) == read_suite_specs(SUITE_CONFIG, [], {'in-c'})
    assert read_suite_specs(SUITE_CONFIG, [], ['in-c'])['in-c']['dataset']['type'] == \
        'CorruptedImageNet'
    assert read_suite_specs(SUITE_CONFIG, [])['in-c']['dataset']['type'] == 'ImageNetC'
    with pytest.raises(ValueError, match=r"\['in-a'\] cannot be made on the fly"):
        read_suite_specs(SUITE_CONFIG, [], ['in-a'])
