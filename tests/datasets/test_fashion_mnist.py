"""stl_mm.datasets.fashion_mnist: the IDX file check and the refusal without a source."""
import gzip
import shutil

import pytest

from stl_mm.datasets import fashion_mnist
from stl_mm.datasets.fashion_mnist import EXPECTED_FILES, check_files, prepare_fashion_mnist


def _write_idx(path, magic: int, count: int) -> None:
    header = magic.to_bytes(4, 'big') + count.to_bytes(4, 'big')
    if magic == 2051:
        header += (28).to_bytes(4, 'big') * 2
    path.write_bytes(header + bytes(count * (28 * 28 if magic == 2051 else 1)))


def _fake_set(folder, count_scale: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (magic, count) in EXPECTED_FILES.items():
        _write_idx(folder / name, magic, count // count_scale)


def test_complete_files_pass_and_truncated_or_missing_ones_do_not(tmp_path):
    _fake_set(tmp_path)
    assert check_files(str(tmp_path))
    images = tmp_path / 't10k-images-idx3-ubyte'
    images.write_bytes(images.read_bytes()[:-1])
    assert not check_files(str(tmp_path))
    (tmp_path / 't10k-images-idx3-ubyte').unlink()
    assert not check_files(str(tmp_path))


def test_files_with_too_few_items_do_not_pass(tmp_path):
    _fake_set(tmp_path, count_scale=10)  # a consistent header and size, but 6k / 1k items
    assert not check_files(str(tmp_path))


def test_extracted_from_the_debian_package_and_recorded(tmp_path, monkeypatch):
    gz_dir, data_dir = tmp_path / 'apt', tmp_path / 'data'
    _fake_set(tmp_path / 'raw')
    gz_dir.mkdir()
    for name in EXPECTED_FILES:
        with open(tmp_path / 'raw' / name, 'rb') as source, gzip.open(
                gz_dir / f'{name}.gz', 'wb') as target:
            shutil.copyfileobj(source, target)
    monkeypatch.setattr(fashion_mnist, 'APT_DIR', str(gz_dir))
    message = prepare_fashion_mnist(str(data_dir), use_download=False)
    assert 'Debian package dataset-fashion-mnist' in message and check_files(str(data_dir))
    again = prepare_fashion_mnist(str(data_dir), use_apt=False, use_download=False)
    assert again == (f'{data_dir} already prepared (source: Debian package '
                     f'dataset-fashion-mnist ({gz_dir}))')


def test_no_source_gives_an_error_naming_the_folder_and_the_fixes(tmp_path):
    with pytest.raises(RuntimeError, match='Could not prepare Fashion-MNIST in .*apt-get install '
                       'dataset-fashion-mnist.*t10k-labels-idx1-ubyte'):
        prepare_fashion_mnist(str(tmp_path / 'empty'), use_apt=False, use_download=False)
