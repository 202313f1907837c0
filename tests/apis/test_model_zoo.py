"""The model zoo: every metafile entry points at a config that builds with the parameters and
resolution it declares, the zoo is in mmpretrain's model hub after ``import stl_mm``, and a
name goes all the way to a prediction (name -> config -> download -> convert -> predict) with a
local file standing in for the download of an official release."""
import re
import runpy
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmpretrain import (ImageClassificationInferencer, get_model, inference_model,
                        list_models)
from mmpretrain.apis import ModelHub
from mmpretrain.registry import MODELS, TRANSFORMS

import stl_mm  # noqa: F401  (registers the zoo)
from stl_mm.apis import model_zoo
from stl_mm.models.backbones.fan_checkpoint import (CheckpointMismatchError, CheckpointReadError,
                                                    convert_checkpoint)
from stl_mm.models.backbones.fan_presets import resolve_arch

REPO = Path(__file__).resolve().parents[2]
ZOO = {model.name: model for model in model_zoo.zoo_models()}
T_VIT = 'fan_t_vit_in1k'
RELEASE = model_zoo.FAN_RELEASE + 'v1.0.0/'
#: The entries with an official file at the FAN release address (NVlabs/FAN README).
RELEASED = {
    'fan_t_hybrid_in1k': 'fan_hybrid_tiny.pth.tar',
    'fan_s_hybrid_in1k': 'fan_hybrid_small.pth.tar',
    'fan_b_hybrid_in1k': 'fan_hybrid_base.pth.tar',
    'fan_t_vit_in1k': 'fan_vit_tiny.pth.tar',
    'fan_s_vit_in1k': 'fan_vit_small.pth.tar',
    'fan_b_vit_in1k': 'fan_vit_base.pth.tar',
    'fan_b_hybrid_in22k_in1k': 'fan_hybrid_base_in22k_1k.pth.tar',
    'fan_b_hybrid_in22k_in1k_384': 'fan_hybrid_base_in22k_1k_384.pth.tar',
    'fan_l_hybrid_in22k_in1k': 'fan_hybrid_large_in22k_1k.pth.tar',
    'fan_l_hybrid_in22k_in1k_384': 'fan_hybrid_large_in22k_1k_384.pth.tar',
}
#: The entries without downloadable weights.
UNRELEASED = sorted(set(ZOO) - set(RELEASED))
PAPERS = {'FAN': 'FAN, ICML 2022', 'STL': 'STL, ICCV 2023'}
METRICS = {'ImageNet-1k': 'Top 1 Accuracy', 'ImageNet-C': 'Mean Corruption Accuracy',
           'ImageNet-A': 'Top 1 Accuracy', 'ImageNet-R': 'Top 1 Accuracy'}


def load(model) -> Config:
    return Config.fromfile(str(REPO / model.config))


# ---------------------------------------------------------------------- the metafiles
@pytest.mark.parametrize('name', sorted(ZOO))
def test_entry_config_builds_with_the_declared_parameters(name):
    model = ZOO[name]
    assert model.config == f'configs/{model.in_collection.lower()}/{name}.py'
    cfg = load(model)
    assert cfg.custom_imports == dict(imports=['stl_mm'], allow_failed_imports=False)
    metadata = model.metadata.data
    assert model_zoo.count_parameters(cfg) == metadata['Parameters']
    assert model_zoo.crop_size(cfg) == metadata['Resolution']
    # The preset the entry names is the architecture the config builds.
    assert resolve_arch(metadata['FAN Preset']) == resolve_arch(cfg.model.backbone.arch)


def test_flops_are_those_of_the_counter():
    cfg = load(ZOO[T_VIT])
    assert model_zoo.count_flops(cfg) == ZOO[T_VIT].metadata.data['FLOPs']


def test_every_classification_config_has_one_entry():
    configs = {str(path.relative_to(REPO)) for folder in ('configs/fan', 'configs/stl')
               for path in (REPO / folder).glob('*.py')}
    assert sorted(model.config for model in ZOO.values()) == sorted(configs)


def test_weights_and_results_are_labelled():
    released = {name: Path(model.weights).name for name, model in ZOO.items() if model.weights}
    assert released == RELEASED
    for name, model in ZOO.items():
        if model.weights:
            assert model.weights == RELEASE + RELEASED[name]
        converted = model.data.get('Converted From')
        if converted:  # STL files: a Google Drive page and the converter command
            assert not model.weights and converted['Weights'].startswith(
                'https://drive.google.com/file/d/')
            assert model.data['Convert'].startswith(
                'python tools/model_converters/fan_to_stl_mm.py DOWNLOADED_FILE ')
        for result in model.results or []:
            assert list(result.metrics) == [METRICS[result.dataset]], name
        if model.results:
            assert model.data['Reported By'].startswith(PAPERS[model.in_collection]), name


def test_zoo_is_in_the_model_hub():
    assert list_models('*fan*') == sorted(ZOO)
    assert set(ZOO) <= set(list_models())  # mmpretrain's own entries register without clash
    stl_mm.apis.model_zoo.register_model_zoo()  # a second registration is a no-op
    assert list_models('*fan*') == sorted(ZOO)


# ---------------------------------------------------------------------- the README table
def test_readme_table_is_rendered_from_the_metafiles():
    text = (REPO / 'README.md').read_text()
    assert model_zoo.readme_table(text) == model_zoo.model_zoo_table()


def test_table_tool_prints_and_checks(tmp_path, capsys):
    main = runpy.run_path(str(REPO / 'tools/misc/model_zoo_table.py'), run_name='tool')['main']
    main([])
    table = model_zoo.model_zoo_table()
    assert capsys.readouterr().out == table + '\n'
    start, end = model_zoo.README_MARKERS
    readme = tmp_path / 'README.md'
    readme.write_text(f'# stl_mm\n\n{start}\n{table}\n{end}\n')
    main(['--check', str(readme)])
    assert 'the model-zoo table is up to date' in capsys.readouterr().out
    readme.write_text(f'{start}\n| old | table |\n{end}\n')
    with pytest.raises(SystemExit, match='is out of date; replace it'):
        main(['--check', str(readme)])
    readme.write_text('no markers\n')
    with pytest.raises(SystemExit, match='needs one line <!-- model-zoo:start -->'):
        main(['--check', str(readme)])


def test_readme_table_needs_its_markers():
    with pytest.raises(ValueError, match='README.md needs one line <!-- model-zoo:start -->'):
        model_zoo.readme_table('# no table here\n')


# ---------------------------------------------------------------------- name -> prediction
@pytest.fixture
def hub_dir(tmp_path):
    """torch's hub cache in a temporary folder (where the downloads go)."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    yield tmp_path / 'hub' / 'checkpoints'
    torch.hub.set_dir(previous)


@pytest.fixture(scope='module')
def t_vit_fixture(official_fixtures):
    """The official FAN-T-ViT golden file: weights (float16 on disk), input, logits."""
    return torch.load(official_fixtures / 'fan_tiny_12_p16_224.pt', weights_only=True)


def write_release_file(fixture: dict, path: Path) -> None:
    """An official release file as timm saves it: raw weights and their EMA, which are the
    golden weights; the raw ones are off by one, so using them shows."""
    ema = {key: value.float() if value.is_floating_point() else value
           for key, value in fixture['checkpoint']['state_dict'].items()}
    raw = {key: value + 1 if value.is_floating_point() else value for key, value in ema.items()}
    torch.save(dict(epoch=299, arch='fan_tiny_12_p16_224', state_dict=raw, state_dict_ema=ema,
                    version=2), path)


def test_get_model_by_name_loads_the_converted_release(hub_dir, t_vit_fixture):
    write_release_file(t_vit_fixture, hub_dir / RELEASED[T_VIT])
    checkpoint = model_zoo.load_from_fan_release(ZOO[T_VIT].weights)
    assert checkpoint['meta']['zoo_model'] == T_VIT
    assert "EMA weights ('state_dict_ema'), official layout" in checkpoint['meta']['source']

    model = get_model(T_VIT, pretrained=True)
    with torch.no_grad():
        sample, = model(t_vit_fixture['input'], mode='predict')
    expected = t_vit_fixture['outputs']['cls_logits'].softmax(1)[0]
    torch.testing.assert_close(sample.pred_score, expected, atol=1e-5, rtol=0)
    assert model._dataset_meta['classes'][0].startswith('tench')


def test_inferencer_and_inference_model_by_name(hub_dir, t_vit_fixture, tmp_path):
    write_release_file(t_vit_fixture, hub_dir / RELEASED[T_VIT])
    image = np.random.RandomState(0).randint(0, 256, (240, 260, 3)).astype(np.uint8)
    mmcv.imwrite(image, str(tmp_path / 'image.png'))
    inferencer = ImageClassificationInferencer(T_VIT)
    ema = t_vit_fixture['checkpoint']['state_dict']['cls_token'].float()
    torch.testing.assert_close(inferencer.model.backbone.cls_token, ema)
    result, = inferencer([str(tmp_path / 'image.png')])
    again = inference_model(T_VIT, str(tmp_path / 'image.png'))
    assert result['pred_label'] == again['pred_label']
    assert result['pred_class'] == inferencer.classes[result['pred_label']]
    np.testing.assert_allclose(result['pred_scores'], again['pred_scores'], atol=1e-6)


def test_download_goes_to_the_hub_cache_once(hub_dir, tmp_path, monkeypatch):
    served = tmp_path / 'served' / RELEASED[T_VIT]
    served.parent.mkdir()
    served.write_bytes(b'release bytes')
    path = model_zoo.download_official(served.as_uri())  # file:// stands in for https://
    assert path == str(hub_dir / RELEASED[T_VIT])
    assert Path(path).read_bytes() == b'release bytes'
    monkeypatch.setattr(torch.hub, 'download_url_to_file', None)  # a second call reads the copy
    assert model_zoo.download_official(served.as_uri()) == path


def test_release_file_of_another_model_is_refused(hub_dir, t_vit_fixture):
    path = hub_dir / RELEASED['fan_t_hybrid_in1k']
    write_release_file(t_vit_fixture, path)  # FAN-T-ViT weights under the hybrid's name
    with pytest.raises(CheckpointMismatchError, match=rf'{path} does not fit .*The file looks '
                       'like FAN preset fan_tiny_12_p16_224'):
        get_model('fan_t_hybrid_in1k', pretrained=True)


def test_failed_download_says_where_to_put_the_file(hub_dir, monkeypatch):
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(CheckpointReadError, match='the download failed .*no network.*download '
                       f'it by hand and save it as {hub_dir / RELEASED[T_VIT]}'):
        get_model(T_VIT, pretrained=True)


def test_release_address_of_no_entry_is_refused():
    url = RELEASE + 'fan_hybrid_base_in22k.pth.tar'  # the 22k-class model: no zoo entry
    with pytest.raises(CheckpointReadError, match='it is the weights of 0 model-zoo entries'):
        model_zoo.load_from_fan_release(url)


def predicts_the_golden_scores(model, fixture) -> None:
    with torch.no_grad():
        sample, = model(fixture['input'], mode='predict')
    expected = fixture['outputs']['cls_logits'].softmax(1)[0]
    torch.testing.assert_close(sample.pred_score, expected, atol=1e-5, rtol=0)


def test_local_official_file_is_refused_and_its_conversion_loads(tmp_path, t_vit_fixture):
    """An official file as downloaded, passed as pretrained=, used to load non-strict into
    nothing (mmengine's reader: raw weights, no backbone. prefix): warnings, random model."""
    path = tmp_path / RELEASED[T_VIT]
    write_release_file(t_vit_fixture, path)
    message = (rf'{re.escape(str(path))} is an official FAN / STL checkpoint \(FAN preset '
               r'fan_tiny_12_p16_224; .*Convert it: python tools/model_converters/'
               rf'fan_to_stl_mm\.py {re.escape(str(path))} OUT\.pth')
    with pytest.raises(CheckpointMismatchError, match=message):
        get_model(T_VIT, pretrained=str(path))
    with pytest.raises(CheckpointMismatchError, match=message):
        get_model(str(REPO / ZOO[T_VIT].config), pretrained=str(path))
    # The fix the message gives: the converted file (EMA weights) loads by name.
    converted = tmp_path / 'fan_t_vit_in1k.pth'
    convert_checkpoint(str(path), str(converted))
    predicts_the_golden_scores(get_model(T_VIT, pretrained=str(converted)), t_vit_fixture)


# ---------------------------------------------------------------------- no published weights
def test_hub_entries_without_weights_point_at_the_refusing_reader():
    for name in ZOO:
        expected = ZOO[name].weights or model_zoo.UNPUBLISHED + name
        assert ModelHub.get(name).weights == expected, name
    assert not any(model.weights.startswith(model_zoo.UNPUBLISHED)
                   for model in ZOO.values() if model.weights)  # the metafiles are unchanged


@pytest.mark.parametrize('name', UNRELEASED)
def test_unpublished_reader_says_why_and_how_to_get_weights(name):
    model = ZOO[name]
    converted = model.data.get('Converted From')
    if converted:
        why = (rf"only on a Google Drive page \({re.escape(converted['Weights'])}\).*"
               rf"{re.escape(model.data['Convert'])}.*get_model\('{name}', "
               rf"pretrained='{name}\.pth'\)")
    else:
        why = ((r'the FAN authors published no file for it' if model.in_collection == 'FAN'
                else r'the STL authors published no file for this config') +
               rf".*python tools/train\.py {model.config}.*get_model\('{name}', "
               rf"pretrained='work_dirs/{name}/epoch_N\.pth'\).*fan_to_stl_mm\.py FILE")
    with pytest.raises(model_zoo.UnpublishedWeightsError,
                       match=rf'^{name} has no weights to download: .*{why}'):
        model_zoo.load_from_unpublished(model_zoo.UNPUBLISHED + name)


def test_unpublished_reader_refuses_unknown_names():
    with pytest.raises(model_zoo.UnpublishedWeightsError, match='names no model-zoo entry'):
        model_zoo.load_from_unpublished(model_zoo.UNPUBLISHED + 'fan_t_vit_in1k')


def test_pretrained_true_without_published_weights_is_refused():
    """get_model(name, pretrained=True) and the inferencers (which ask for pretrained weights)
    used to warn 'Unable to find pre-defined checkpoint' and predict with a random model."""
    drive = r'^fan_t_student has no weights to download: .*Google Drive'
    with pytest.raises(model_zoo.UnpublishedWeightsError, match=drive):
        get_model('fan_t_student', pretrained=True)
    # inference_model picks the inferencer by the entry's Results task (entries without
    # results have none: mmpretrain raises 'No available inferencer').
    with pytest.raises(model_zoo.UnpublishedWeightsError, match=drive):
        inference_model('fan_t_student', np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(model_zoo.UnpublishedWeightsError, match=r'^fan_t_vit_student has no '
                       'weights to download: the STL authors published no file'):
        ImageClassificationInferencer('fan_t_vit_student')


def test_inference_model_serves_entries_without_published_results(tmp_path):
    """An entry whose metafile has no results (nothing published) still names its task, so
    inference_model finds the classification inferencer: with a local file it predicts with
    it, and without one it refuses with the missing-weights error."""
    name = 'fan_t_vit_student'
    assert ZOO[name].results is None
    model = get_model(name)
    torch.save(dict(state_dict=model.state_dict(), meta={}), tmp_path / 'mine.pth')
    image = np.random.RandomState(0).randint(0, 256, (240, 260, 3)).astype(np.uint8)
    mmcv.imwrite(image, str(tmp_path / 'image.png'))
    result = inference_model(name, str(tmp_path / 'image.png'), pretrained=str(
        tmp_path / 'mine.pth'))
    assert 0 <= result['pred_label'] < 1000
    with pytest.raises(model_zoo.UnpublishedWeightsError, match=name):
        inference_model(name, str(tmp_path / 'image.png'))


def test_entry_without_weights_builds_and_loads_a_local_file(tmp_path):
    model = get_model('fan_t_vit_student')  # pretrained=False: built, nothing read
    mine = {key: value + 1 if value.is_floating_point() else value
            for key, value in model.state_dict().items()}
    torch.save(dict(state_dict=mine, meta={}), tmp_path / 'mine.pth')
    loaded = get_model('fan_t_vit_student', pretrained=str(tmp_path / 'mine.pth'))
    for key, value in mine.items():
        assert torch.equal(loaded.state_dict()[key], value), key


# ---------------------------------------------------------------------- configs run
def train_batch(cfg: Config, size: int) -> dict:
    """Two synthetic images through the config's training pipeline, crops of ``size``."""
    steps = cfg.train_dataloader.dataset.pipeline[1:]
    crop = steps[0].shared[0] if steps[0].type == 'DualView' else steps[0]
    crop.scale = size
    pipeline = [TRANSFORMS.build(step) for step in steps]
    samples = []
    for index in range(2):
        image = np.random.RandomState(index).randint(0, 256, (120, 130, 3)).astype(np.uint8)
        results = dict(img=image, gt_label=index, img_shape=image.shape[:2])
        for step in pipeline:
            results = step(results)
        samples.append(results)
    return {key: [sample[key] for sample in samples] for key in samples[0]}


TRAINING = sorted(name for name in ZOO if load(ZOO[name]).train_dataloader is not None)
EVALUATION = sorted(set(ZOO) - set(TRAINING))


@pytest.mark.parametrize('name', TRAINING)
def test_every_training_config_trains_one_iteration(name):
    """One optimiser step of each training entry's config, crops 32x32 instead of 224x224
    (the smallest side every FAN preset takes)."""
    cfg = load(ZOO[name])
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    if 'teacher' in cfg.default_hooks:
        model.set_teacher(MODELS.build(cfg.default_hooks.teacher.model).eval())
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = model.backbone.cls_token.detach().clone()
    losses = model.train_step(train_batch(cfg, 32), optim_wrapper)
    assert all(torch.isfinite(value) for value in losses.values())
    assert ('loss_token' in losses) == (cfg.model.mode != 'plain')
    assert not torch.equal(model.backbone.cls_token, before)


@pytest.mark.parametrize('name', EVALUATION)
def test_every_evaluation_config_runs_one_test_batch(name):
    """The test pipeline and model of each evaluation-only entry on one image; the 384 px
    entries at their full 384x384."""
    cfg = load(ZOO[name])
    assert cfg.train_dataloader is None and cfg.get('optim_wrapper') is None
    pipeline = [TRANSFORMS.build(step) for step in cfg.test_dataloader.dataset.pipeline[1:]]
    image = np.random.RandomState(0).randint(0, 256, (400, 500, 3)).astype(np.uint8)
    results = dict(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2])
    for step in pipeline:
        results = step(results)
    size = ZOO[name].metadata.data['Resolution']
    assert results['inputs'].shape == (3, size, size)
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor)).eval()
    sample, = model.test_step(dict(inputs=[results['inputs']],
                                   data_samples=[results['data_samples']]))
    assert sample.pred_score.shape == (1000, ) and torch.isfinite(sample.pred_score).all()


# ---------------------------------------------------------------------- packaging
def test_built_package_carries_the_zoo(tmp_path):
    """setup.py build_py packs model-index.yml and the configs into stl_mm/.mim, and an
    installed package (no checkout around it) registers the zoo from there."""
    source = tmp_path / 'src'
    files = subprocess.run(['git', 'ls-files'], cwd=REPO, check=True, capture_output=True,
                           text=True).stdout.split()
    for name in files:
        # setup.py reads the deploy extra from requirements/.
        if name.startswith(('stl_mm/', 'configs/', 'requirements/')) or name in (
                'setup.py', 'model-index.yml'):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, 'setup.py', '-q', 'build_py', '--build-lib',
                    str(tmp_path / 'lib')], cwd=source, check=True, capture_output=True)
    mim = tmp_path / 'lib' / 'stl_mm' / '.mim'
    assert (mim / 'model-index.yml').is_file()
    assert (mim / 'configs' / 'fan' / 'metafile.yml').is_file()
    assert (mim / 'configs' / '_base_' / 'models' / 'fan_hybrid_in1k.py').is_file()
    script = ('import stl_mm; from mmpretrain import list_models; '
              'from mmpretrain.apis import ModelHub; '
              "print(len(list_models('*fan*')), ModelHub.get('fan_t_vit_in1k').config.filename)")
    output = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, check=True,
                            capture_output=True, text=True,
                            env={'PYTHONPATH': str(tmp_path / 'lib'), 'OMP_NUM_THREADS': '1',
                                 'PATH': '/usr/bin:/bin'}).stdout.split()
    assert output == [str(len(ZOO)), str(mim / 'configs' / 'fan' / 'fan_t_vit_in1k.py')]
