"""Prepare Fashion-MNIST for mmpretrain's ``FashionMNIST`` dataset (used by ``make demo``).

The four extracted IDX files come from the first source that works: the folder itself, Debian's
``dataset-fashion-mnist`` package (installed with apt-get when root), or mmpretrain's download
(see :mod:`stl_mm.datasets.fashion_mnist`). The source used is printed and written to
``SOURCE.txt`` next to the files.

Example:
    python tools/dataset_converters/prepare_fashion_mnist.py --data-dir data/fashion_mnist
"""
import argparse
import sys

from stl_mm.datasets.fashion_mnist import DEFAULT_DATA_DIR, prepare_fashion_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-dir', default=DEFAULT_DATA_DIR)
    parser.add_argument('--no-apt', action='store_true', help='skip the Debian package')
    parser.add_argument('--no-download', action='store_true', help='skip mmpretrain\'s download')
    args = parser.parse_args()
    try:
        message = prepare_fashion_mnist(args.data_dir, not args.no_apt, not args.no_download)
    except RuntimeError as error:
        sys.exit(str(error))
    print(f'[fashion-mnist] {message}')


if __name__ == '__main__':
    main()
