from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open('stl_mm/version.py') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_requirements(path: str) -> list:
    """The requirement lines of a requirements file (comments and blank lines dropped)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


setup(
    name='stl_mm',
    version=read_version(),
    description='FAN backbones and Self-emerging Token Labeling (STL) for OpenMMLab 2.x',
    packages=find_packages(include=['stl_mm', 'stl_mm.*']),
    package_data={'stl_mm.datasets': ['*.txt']},
    python_requires='>=3.9',
    install_requires=[
        'mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0,<2.2.0', 'mmpretrain>=1.2.0',
        'imagecorruptions>=1.1.2'
    ],
    extras_require={
        'seg': ['mmsegmentation>=1.2.0'],
        'det': ['mmdet>=3.3.0', 'pycocotools'],
        'deploy': read_requirements('requirements/deploy.txt'),
    },
    license='Apache-2.0',
)
