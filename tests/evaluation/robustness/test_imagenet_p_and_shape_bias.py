"""The ImageNet-P and shape-bias suites of tools/analysis_tools/test_robustness.py end to end on
tiny trees laid out like the releases (``<perturbation>/<wnid>/<name>.mp4`` videos written with
OpenCV; ``<shape>/<shape><n>-<texture><m>.png`` stimuli), with a classifier whose predictions
are known (tests/data/colour_classifier.py): every figure below is worked out by hand."""
import json
from pathlib import Path

import numpy as np
import pytest
from colour_classifier import (CAT, CLOCK, COLOURS, DOG, FRAME_A, FRAME_B, GOLDFISH, KNIFE,
                               NOISE_FIGURES, NOISE_VIDEOS, OVEN, TEMPORAL_FIGURES,
                               TEMPORAL_VIDEOS, TENCH, solid, write_imagenet_p_tree, write_model,
                               write_stimuli, write_video)
from PIL import Image

from stl_mm.datasets.cue_conflict import CueConflict
from stl_mm.datasets.imagenet_p import (ALL_PERTURBATIONS, GENERATED_PERTURBATIONS, ImageNetP,
                                        LoadSequenceFrame, perturbation_frame, sequence_length)
from stl_mm.engine.runner_setup import prepare_config
from stl_mm.evaluation.metrics.perturbation import IMAGENET_P_PERTURBATIONS
from stl_mm.evaluation.robustness.imagenet import evaluate_imagenet_robustness, read_suite_specs

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'analysis_tools' / 'test_robustness.py'
SUITE_CONFIG = REPO_ROOT / 'configs' / 'robustness' / 'suites.py'
A, B = FRAME_A, FRAME_B
VIDEOS = {'rotate': TEMPORAL_VIDEOS, 'gaussian_noise': NOISE_VIDEOS}
# rotate: FP = (2/4 + 0 + 0) / 3 = 16.67%, T5D = (16/4) / 3; gaussian_noise: FP = (2/4 + 1 + 0)
# / 3 = 50%, T5D = (16/4 + 32/4 + 0) / 3 = 4.
EXPECTED = {'rotate': TEMPORAL_FIGURES, 'gaussian_noise': NOISE_FIGURES}
# Toy AlexNet figures for the suites file: every benchmark perturbation needs them; only those
# of the two evaluated enter FR, mFR and mT5D.
ALEXNET = {**{p: dict(flip_probability=10.0, top5_distance=1.0) for p in IMAGENET_P_PERTURBATIONS},
           'rotate': dict(flip_probability=50.0, top5_distance=4.0),
           'gaussian_noise': dict(flip_probability=50.0, top5_distance=12.0)}
STIMULI = {'cat/cat1-clock1.png': CAT,  # shape decision
           'cat/cat2-dog1.png': DOG,  # texture decision
           'cat/cat3-knife1.png': OVEN,  # neither
           'dog/dog1-cat1.png': DOG,  # shape
           'dog/dog2-dog3.png': DOG,  # no cue conflict: left out
           'clock/clock1-cat2.png': CAT,  # texture
           'knife/knife1-oven1.png': KNIFE}  # shape


@pytest.fixture(scope='module')
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('in_p_shape_bias')
    write_imagenet_p_tree(root / 'imagenet-p', VIDEOS)
    write_stimuli(root / 'cue-conflict', {name: COLOURS[label] for name, label in STIMULI.items()})
    # Clean val images for the on-the-fly sequences: large enough for the 256 / 224 recipe.
    for wnid, colour in ((TENCH, A), (GOLDFISH, B)):
        (root / 'imagenet' / 'val' / wnid).mkdir(parents=True)
        Image.fromarray(solid(colour, (256, 300))).save(root / 'imagenet' / 'val' / wnid / 'x.png')
    config, checkpoint = write_model(root)
    data_roots = [f'in-p={root / "imagenet-p"}', f'shape-bias={root / "cue-conflict"}']
    return dict(root=root, config=config, checkpoint=checkpoint, suites=str(SUITE_CONFIG),
                data_roots=data_roots)


def suites_with_alexnet(tmp_path: Path, alexnet) -> str:
    """The repository's suites file with ``alexnet_imagenet_p`` set to ``alexnet``."""
    text = SUITE_CONFIG.read_text()
    assert 'alexnet_imagenet_p = None\n' in text
    path = tmp_path / 'suites_with_alexnet.py'
    path.write_text(text.replace('alexnet_imagenet_p = None\n',
                                 f'alexnet_imagenet_p = {alexnet!r}\n'))
    return str(path)


def _evaluate(world: dict, out: Path, suites=('in-p', 'shape-bias'),
              perturbations=('rotate', 'gaussian_noise'), on_the_fly=False,
              data_roots=(), suites_file=None) -> dict:
    """What the tool's main does."""
    cfg = prepare_config(world['config'], str(out.parent / 'work'))
    made = ['in-p'] if on_the_fly else False
    specs = read_suite_specs(suites_file or world['suites'], [*world['data_roots'], *data_roots],
                             made)
    evaluate_imagenet_robustness(cfg, world['config'], world['checkpoint'], str(out),
                                 list(suites), [], [], specs, on_the_fly=made,
                                 perturbations=list(perturbations))
    return json.loads(out.read_text())


def test_both_suites_give_the_hand_computed_figures(world, tmp_path):
    out = tmp_path / 'results.json'
    results = _evaluate(world, out, suites_file=suites_with_alexnet(tmp_path, ALEXNET))
    for perturbation, (fp, t5d) in EXPECTED.items():
        metrics = results['cells'][f'in-p/{perturbation}']['metrics']
        assert metrics['perturbation/flip_probability'] == pytest.approx(fp), perturbation
        assert metrics['perturbation/top5_distance'] == pytest.approx(t5d), perturbation
        assert (metrics['perturbation/sequences'], metrics['perturbation/frames']) == (3, 5)
        assert results['cells'][f'in-p/{perturbation}']['num_samples'] == 15
    in_p = results['summary']['in-p']
    assert in_p['FR/rotate'] == pytest.approx(100 / 3)  # 16.67 / 50
    assert in_p['FR/gaussian_noise'] == pytest.approx(100.0)  # 50 / 50
    assert in_p['mFR'] == pytest.approx((100 / 3 + 100) / 2)
    assert in_p['mT5D'] == pytest.approx(100 / 3)  # (4/3) / 4 and 4 / 12
    bias = results['summary']['shape-bias']
    assert bias['shape_bias'] == pytest.approx(60.0)  # 3 shape, 2 texture decisions
    assert bias['stimuli'] == 6 and bias['shape_match'] == pytest.approx(50.0)
    assert {c: bias[f'shape_bias/{c}'] for c in ('cat', 'dog', 'clock', 'knife')} == \
        pytest.approx({'cat': 50.0, 'dog': 100.0, 'clock': 0.0, 'knife': 100.0})
    assert results['inputs']['data']['in-p'] == dict(root=str(world['root'] / 'imagenet-p'),
                                                     mode='files')
    assert results['selection']['perturbations'] == ['rotate', 'gaussian_noise']
    markdown = out.with_suffix('.md').read_text()
    for line in ('## ImageNet-P', '| gaussian_noise | 50.00 | 100.00 | 4.00 | 33.33 | 3 |',
                 '| rotate | 16.67 | 33.33 | 1.33 | 33.33 | 3 |', '## ImageNet-P summary',
                 '## Shape bias (cue conflict)', '| cat | 50.00 | 1 | 1 |',
                 '| IN-P mFR | IN-P mT5D | shape bias |', '| 66.67 | 33.33 | 60.00 |'):
        assert line in markdown, line


def test_without_alexnet_figures_no_rate_is_given_and_bad_ones_are_refused(world, tmp_path):
    out = tmp_path / 'results.json'
    results = _evaluate(world, out, suites=('in-p', ))
    assert set(results['summary']['in-p']) == {'FP/rotate', 'T5D/rotate', 'FP/gaussian_noise',
                                               'T5D/gaussian_noise', 'mFP', 'mT5D_raw'}
    markdown = out.with_suffix('.md').read_text()
    for line in ('| rotate | 16.67 | - | 1.33 | - | 3 |', '| - | - |',
                 'FR, mFR and mT5D are left out: the suites file gives no AlexNet figures'):
        assert line in markdown, line
    partial = {'rotate': ALEXNET['rotate']}
    negative = dict(ALEXNET, tilt=dict(flip_probability=-1.0, top5_distance=1.0))
    for alexnet, message in ((partial, r"lacks AlexNet's figures for \['gaussian_noise'"),
                             (negative, r"alexnet\)\['tilt'\] needs positive numbers for "
                                        r"\['flip_probability'\]")):
        bad_out = tmp_path / 'bad.json'
        with pytest.raises(SystemExit, match=message):
            _evaluate(world, bad_out, suites=('in-p', ),
                      suites_file=suites_with_alexnet(tmp_path, alexnet))
        assert not bad_out.exists()  # refused before anything was evaluated


def test_cells_resume_and_the_set_grows(world, tmp_path):
    out = tmp_path / 'results.json'
    first = _evaluate(world, out, suites=('in-p', ), perturbations=('rotate', ))
    first['cells']['in-p/rotate']['metrics']['perturbation/flip_probability'] = 12.5
    out.write_text(json.dumps(first))  # a recorded cell is never evaluated again
    second = _evaluate(world, out, suites=('in-p', ))
    assert second['summary']['in-p']['FP/rotate'] == 12.5
    assert second['summary']['in-p']['FP/gaussian_noise'] == pytest.approx(50.0)


def test_on_the_fly_sequences(world, tmp_path):
    # Solid images: fresh noise and rotations by up to 15 degrees keep every frame's five best
    # classes, so nothing flips and every top-5 distance is 0, over 31 frames per image.
    out = tmp_path / 'results.json'
    results = _evaluate(world, out, suites=('in-p', ), on_the_fly=True,
                        data_roots=[f'in-p={world["root"] / "imagenet"}'])
    for perturbation in ('rotate', 'gaussian_noise'):
        cell = results['cells'][f'in-p/{perturbation}']
        assert cell['num_samples'] == 2 * 31
        assert cell['metrics']['perturbation/flip_probability'] == 0.0
        assert cell['metrics']['perturbation/top5_distance'] == 0.0
    assert results['inputs']['data']['in-p'] == dict(root=str(world['root'] / 'imagenet'),
                                                     mode='on_the_fly', seed=0)
    assert 'figures differ from the released sequences' in out.with_suffix('.md').read_text()
    with pytest.raises(SystemExit, match=r"cannot generate \['motion_blur'\].*--perturbations"):
        _evaluate(world, tmp_path / 'other.json', suites=('in-p', ), on_the_fly=True,
                  perturbations=('motion_blur', ),
                  data_roots=[f'in-p={world["root"] / "imagenet"}'])


def test_the_generator_follows_the_release_recipe():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 300, 3), dtype=np.uint8)
    crop = image[16:240, 38:262]
    assert sequence_length('translate') == 41 and sequence_length('rotate') == 31
    # The middle frames of the geometric sequences are the plain centre crop.
    for perturbation, middle in (('translate', 20), ('rotate', 15), ('tilt', 15), ('scale', 24)):
        np.testing.assert_array_equal(perturbation_frame(image, perturbation, middle, 0), crop)
    assert np.abs(perturbation_frame(image, 'brightness', 15, 0).astype(int) - crop).max() <= 1
    # Translate shifts by one pixel per frame: frame 21 is the crop one pixel to the left.
    np.testing.assert_array_equal(perturbation_frame(image, 'translate', 21, 0)[:, 1:],
                                  crop[:, :-1])
    # Noise: frame 0 is clean, the others fresh draws fixed by their seed.
    np.testing.assert_array_equal(perturbation_frame(image, 'gaussian_noise', 0, 5), crop)
    first = perturbation_frame(image, 'gaussian_noise', 1, 5)
    np.testing.assert_array_equal(first, perturbation_frame(image, 'gaussian_noise', 1, 5))
    assert (first != perturbation_frame(image, 'gaussian_noise', 1, 6)).any()
    assert 3 < np.abs(first.astype(float) - crop).mean() < 12  # sigma 0.03 of 255
    with pytest.raises(ValueError, match='31 frames; frame 31 does not exist'):
        perturbation_frame(image, 'rotate', 31, 0)
    with pytest.raises(ValueError, match='at least 224x224'):
        perturbation_frame(image[:200], 'shot_noise', 1, 0)


def test_wrong_inputs_are_refused(world, tmp_path):
    stray = tmp_path / 'p' / 'rotate' / 'not_a_wnid'
    stray.mkdir(parents=True)
    with pytest.raises(ValueError, match='not_a_wnid is not an ImageNet-1K wnid'):
        ImageNetP(data_root=str(tmp_path / 'p'), perturbation='rotate')
    with pytest.raises(FileNotFoundError, match=r'no folder .*tilt.*--perturbations'):
        ImageNetP(data_root=str(world['root'] / 'imagenet-p'), perturbation='tilt')
    video = str(world['root'] / 'imagenet-p' / 'rotate' / TENCH / 'v1.mp4')
    with pytest.raises(ValueError, match='decodes to 5 frames but announces 6'):
        LoadSequenceFrame()(dict(img_path=video, frame=0, num_frames=6))
    for folder, name, message in (('tiger', 'tiger1-cat1.png', "tiger is not one of the 16"),
                                  ('cat', 'cat1_dog1.png', 'does not parse'),
                                  ('cat', 'dog1-cat1.png', "has shape 'dog' but lies in the "
                                                           "'cat' folder")):
        stimuli = tmp_path / f'stimuli_{folder}_{name}'
        (stimuli / folder).mkdir(parents=True)
        Image.fromarray(solid(COLOURS[CLOCK])).save(stimuli / folder / name)
        with pytest.raises(ValueError, match=message):
            CueConflict(data_root=str(stimuli))


def test_the_tool_picks_the_perturbations():
    import importlib.util
    spec = importlib.util.spec_from_file_location('test_robustness_tool', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.parse_args(['c.py', 'k.pth']).perturbations == list(IMAGENET_P_PERTURBATIONS)
    assert tool.parse_args(['c.py', 'k.pth', '--in-p-on-the-fly']).perturbations == \
        list(GENERATED_PERTURBATIONS)
    assert tool.parse_args(['c.py', 'k.pth', '--perturbations', 'all']).perturbations == \
        list(ALL_PERTURBATIONS)
    assert tool.parse_args(['c.py', 'k.pth']).suites[-2:] == ['in-p', 'shape-bias']
    with pytest.raises(SystemExit):
        tool.parse_args(['c.py', 'k.pth', '--perturbations', 'fog'])


def test_a_video_without_a_sequence_is_refused(tmp_path):
    empty = tmp_path / 'p' / 'rotate' / TENCH / 'one_frame.mp4'
    write_video(empty, [FRAME_A])
    with pytest.raises(ValueError, match='one_frame.mp4 has 1 frames; a sequence needs at least'):
        ImageNetP(data_root=str(tmp_path / 'p'), perturbation='rotate')
