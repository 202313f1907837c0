"""Cityscapes-C generation (tools/dataset_converters/gen_city_c.py) on a tiny synthetic
Cityscapes val split."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import synthetic_cityscapes as synthetic

from stl_mm.compat.imagecorruptions import ALL_CORRUPTIONS, corrupt, corruption_seed
from stl_mm.evaluation.robustness.cityscapes_c_generation import generate_city_c

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'dataset_converters' / 'gen_city_c.py'


def _generate(src: Path, dst: Path, corruptions, severities, workers: int = 1) -> int:
    return generate_city_c(src, dst, corruptions, severities, base_seed=0, workers=workers)


@pytest.fixture
def val_dir(tmp_path: Path) -> Path:
    synthetic.make_cityscapes(tmp_path / 'cityscapes')
    return tmp_path / 'cityscapes' / 'leftImg8bit' / 'val'


def _relative_files(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file())


def test_writes_the_tree_of_corrupted_images_and_rerun_skips_everything(val_dir, tmp_path, capsys):
    dst = tmp_path / 'city_c'
    args = (val_dir, dst, ['gaussian_noise', 'fog'], [1, 3], 2)
    assert _generate(*args) == 0

    clean = _relative_files(val_dir)
    assert len(clean) == 3
    expected = sorted(f'{c}/{s}/{image}' for c in ('gaussian_noise', 'fog') for s in (1, 3)
                      for image in clean)
    assert _relative_files(dst) == expected
    for relative in expected:
        corrupted = cv2.imread(str(dst / relative))
        source = cv2.imread(str(val_dir / relative.split('/', 2)[2]))
        assert corrupted.shape == source.shape
        assert not np.array_equal(corrupted, source), relative

    stamps = {p: p.stat().st_mtime_ns for p in dst.rglob('*.png')}
    capsys.readouterr()
    assert _generate(*args) == 0
    assert '12 already written, 0 to write' in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in dst.rglob('*.png')} == stamps


def test_outputs_are_seeded_per_image_whatever_the_worker_count(val_dir, tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    common = (['shot_noise', 'spatter'], [2])
    assert _generate(val_dir, one, *common, workers=1) == 0
    assert _generate(val_dir, two, *common, workers=2) == 0
    files = _relative_files(one)
    assert files == _relative_files(two)
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)

    # Same image name in another corruption or severity gets another seed: noise differs.
    noise = [cv2.imread(str(one / 'shot_noise/2' / f)).astype(int) - cv2.imread(
        str(val_dir / f)).astype(int) for f in _relative_files(val_dir)[:2]]
    assert not np.array_equal(noise[0], noise[1])

    # Resuming after losing a file rewrites exactly the same bytes.
    lost = one / files[0]
    original = lost.read_bytes()
    lost.unlink()
    assert _generate(val_dir, one, *common, workers=1) == 0
    assert lost.read_bytes() == original

    # The seed is the one of every corrupted image in stl_mm: corruption_seed of the path
    # relative to the clean folder.
    relative = files[0].split('/', 2)[2]
    clean_rgb = cv2.cvtColor(cv2.imread(str(val_dir / relative)), cv2.COLOR_BGR2RGB)
    expected = corrupt(clean_rgb, 'shot_noise', 2, corruption_seed(0, relative, 'shot_noise', 2))
    written = cv2.cvtColor(cv2.imread(str(one / 'shot_noise' / '2' / relative)),
                           cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, expected)


def test_every_corruption_runs(val_dir, tmp_path):
    src = tmp_path / 'one_image'
    target = src / 'lindau' / 'lindau_000000_000019_leftImg8bit.png'
    target.parent.mkdir(parents=True)
    target.write_bytes((val_dir / 'lindau' / target.name).read_bytes())
    dst = tmp_path / 'all'
    assert _generate(src, dst, ALL_CORRUPTIONS, [5]) == 0
    assert sorted(p.name for p in dst.iterdir()) == sorted(ALL_CORRUPTIONS)
    assert len(ALL_CORRUPTIONS) == 19
    clean = cv2.imread(str(target))
    for corruption in ALL_CORRUPTIONS:
        corrupted = cv2.imread(str(dst / corruption / '5' / 'lindau' / target.name))
        assert corrupted.shape == clean.shape and not np.array_equal(corrupted, clean), corruption


def test_unreadable_inputs_are_named_and_fail_the_run_after_the_rest(val_dir, tmp_path, capsys):
    broken = val_dir / 'lindau' / 'lindau_000099_000019_leftImg8bit.png'
    broken.write_bytes(b'not a png')
    dst = tmp_path / 'city_c'
    stale = dst / 'brightness' / '1' / 'frankfurt' / '.tmp-interrupted.png'
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b'half a file')

    code = _generate(val_dir, dst, ['brightness'], [1])
    assert code == 1
    err = capsys.readouterr().err
    assert str(broken) in err and 'unreadable' in err
    assert not stale.exists()
    written = _relative_files(dst / 'brightness' / '1')
    assert len(written) == 3 and broken.name not in ' '.join(written)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit, match='not a directory'):
        _generate(tmp_path / 'missing', tmp_path / 'out', ['fog'], [1])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit, match='No \\*_leftImg8bit.png'):
        _generate(tmp_path / 'empty', tmp_path / 'out', ['fog'], [1])
    result = subprocess.run([sys.executable, str(TOOL), '--corruptions', 'rain'],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'rain'" in result.stderr
