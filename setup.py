import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

#: Files outside the package that the model zoo reads (stl_mm/apis/model_zoo.py).
MIM_FILES = ('model-index.yml', 'configs')
MIM_DIR = osp.join('stl_mm', '.mim')


def read_version() -> str:
    namespace: dict = {}
    with open('stl_mm/version.py') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_requirements(path: str) -> list:
    """The requirement lines of a requirements file (comments and blank lines dropped)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


def pack_mim_files() -> None:
    """Copies the model index and the configs into stl_mm/.mim for a built package (wheel,
    sdist, plain install), where an installed stl_mm finds its model zoo. Editable installs
    read them from the checkout and get no copy (it would go stale)."""
    if not {'build', 'build_py', 'bdist_wheel', 'sdist', 'install'} & set(sys.argv[1:]):
        return
    shutil.rmtree(MIM_DIR, ignore_errors=True)
    os.makedirs(MIM_DIR)
    for name in MIM_FILES:
        if osp.isdir(name):
            shutil.copytree(name, osp.join(MIM_DIR, name),
                            ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy(name, osp.join(MIM_DIR, name))


pack_mim_files()
setup(
    name='stl_mm',
    version=read_version(),
    description='FAN backbones and Self-emerging Token Labeling (STL) for OpenMMLab 2.x',
    packages=find_packages(include=['stl_mm', 'stl_mm.*']),
    package_data={
        'stl_mm.datasets': ['data/*.txt', 'data/*.md', 'data/*.json'],
        'stl_mm': ['.mim/model-index.yml', '.mim/configs/**/*.py', '.mim/configs/**/*.yml'],
    },
    python_requires='>=3.9',
    install_requires=[
        'mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0,<2.2.0', 'mmpretrain>=1.2.0',
        'imagecorruptions>=1.1.2', 'modelindex'
    ],
    extras_require={
        'seg': ['mmsegmentation>=1.2.0'],
        'det': ['mmdet>=3.3.0', 'pycocotools'],
        'deploy': read_requirements('requirements/deploy.txt'),
    },
    license='Apache-2.0',
)
