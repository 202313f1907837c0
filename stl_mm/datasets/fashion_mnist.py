"""Fashion-MNIST for mmpretrain's ``FashionMNIST`` dataset (used by ``make demo``).

mmpretrain reads the four extracted IDX files (``train-images-idx3-ubyte`` ...) from its
``data_prefix``. :func:`prepare_fashion_mnist` takes them from the first source that works:

1. ``data_dir`` already holds them: nothing to do.
2. Debian's ``dataset-fashion-mnist`` package (gzipped IDX files in
   ``/usr/share/datasets/fashion-mnist``): extracted from there; when the package is missing
   and we are root on a Debian-like system, it is installed with ``apt-get`` first.
3. mmpretrain's own download (``FashionMNIST(download=True)``, from Zalando's server).

The source used is returned and written to ``SOURCE.txt`` next to the files. The command line
is ``tools/dataset_converters/prepare_fashion_mnist.py``.
"""
import gzip
import os
import os.path as osp
import shutil
import subprocess
from typing import Dict

__all__ = ['APT_PACKAGE', 'DEFAULT_DATA_DIR', 'check_files', 'prepare_fashion_mnist']

APT_PACKAGE = 'dataset-fashion-mnist'
APT_DIR = '/usr/share/datasets/fashion-mnist'
DEFAULT_DATA_DIR = 'data/fashion_mnist'
SOURCE_FILE = 'SOURCE.txt'
#: Extracted file name -> (IDX magic number, number of items): 2051 images, 2049 labels.
EXPECTED_FILES: Dict[str, tuple] = {
    'train-images-idx3-ubyte': (2051, 60000),
    'train-labels-idx1-ubyte': (2049, 60000),
    't10k-images-idx3-ubyte': (2051, 10000),
    't10k-labels-idx1-ubyte': (2049, 10000),
}


def check_files(data_dir: str) -> bool:
    """Whether ``data_dir`` holds the four complete IDX files (header and size checked)."""
    for name, (magic, count) in EXPECTED_FILES.items():
        path = osp.join(data_dir, name)
        if not osp.isfile(path):
            return False
        with open(path, 'rb') as file:
            header = file.read(16 if magic == 2051 else 8)
        if len(header) < 8 or int.from_bytes(header[:4], 'big') != magic or int.from_bytes(
                header[4:8], 'big') != count:
            return False
        item_size = 28 * 28 if magic == 2051 else 1
        if osp.getsize(path) != len(header) + count * item_size:
            return False
    return True


def _extract_from(gz_dir: str, data_dir: str) -> None:
    os.makedirs(data_dir, exist_ok=True)
    for name in EXPECTED_FILES:
        with gzip.open(osp.join(gz_dir, name + '.gz'), 'rb') as source, open(
                osp.join(data_dir, name), 'wb') as target:
            shutil.copyfileobj(source, target)


def _apt_files_present() -> bool:
    return all(osp.isfile(osp.join(APT_DIR, name + '.gz')) for name in EXPECTED_FILES)


def _install_apt_package() -> bool:
    """Install the Debian package when we may (root, apt-get present); True on success."""
    if shutil.which('apt-get') is None or not hasattr(os, 'geteuid') or os.geteuid() != 0:
        return False
    print(f'[fashion-mnist] installing the Debian package {APT_PACKAGE} with apt-get',
          flush=True)
    install = ['apt-get', 'install', '-y', '-q', APT_PACKAGE]
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if subprocess.run(install, **quiet).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(['apt-get', 'update', '-q'], **quiet)
        if subprocess.run(install, **quiet).returncode != 0:
            return False
    return _apt_files_present()


def _download_with_mmpretrain(data_dir: str) -> None:
    from mmpretrain.datasets import FashionMNIST
    os.makedirs(data_dir, exist_ok=True)
    FashionMNIST(data_prefix=data_dir, test_mode=True, download=True, lazy_init=False)


def prepare_fashion_mnist(data_dir: str = DEFAULT_DATA_DIR,
                          use_apt: bool = True,
                          use_download: bool = True) -> str:
    """Make ``data_dir`` hold the extracted Fashion-MNIST files; return the source used.

    Args:
        data_dir: Folder for the four IDX files (the configs' ``data_prefix``).
        use_apt: Allow the Debian package (and installing it).
        use_download: Allow mmpretrain's download.

    Returns:
        A sentence naming the source (also written to ``<data_dir>/SOURCE.txt``).
    """
    if check_files(data_dir):
        source_path = osp.join(data_dir, SOURCE_FILE)
        earlier = 'unknown'
        if osp.isfile(source_path):
            with open(source_path) as file:
                earlier = file.read().strip()
        return f'{data_dir} already prepared (source: {earlier})'
    source = None
    if use_apt and (_apt_files_present() or _install_apt_package()):
        _extract_from(APT_DIR, data_dir)
        source = f'Debian package {APT_PACKAGE} ({APT_DIR})'
    elif use_download:
        print('[fashion-mnist] the Debian package is unavailable; downloading with mmpretrain',
              flush=True)
        _download_with_mmpretrain(data_dir)
        source = 'downloaded by mmpretrain (FashionMNIST, download=True)'
    if source is None or not check_files(data_dir):
        raise RuntimeError(
            f'Could not prepare Fashion-MNIST in {data_dir}. Install the Debian package '
            f'(`sudo apt-get install {APT_PACKAGE}`), allow network access for mmpretrain\'s '
            'download, or copy train-images-idx3-ubyte, train-labels-idx1-ubyte, '
            f't10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (extracted) into {data_dir}.')
    with open(osp.join(data_dir, SOURCE_FILE), 'w') as file:
        file.write(source + '\n')
    return f'{data_dir} prepared (source: {source})'
