"""Datasets of the classification robustness suites.

Run by ``tools/analysis_tools/test_robustness.py``.

The data roots below are the only place where the suites' data locations are set
(``--data-root SUITE=PATH`` overrides one for a single run). Each suite gives the dataset; the
test pipeline, batch size and workers come from the model config being evaluated, so every suite
sees the images exactly as the clean evaluation does. Where each release comes from and how its
folders map onto the 1000 classes: ``stl_mm/datasets/data/README.md``.

Expected layouts:
    imagenet_root:   val/<wnid>/<image>, or mmpretrain's val/ + meta/val.txt (then add
                     ann_file='meta/val.txt' to ``in1k``, ``in_c_on_the_fly`` and ``in_real``);
                     real.json (ImageNet-ReaL's labels) next to val/
    imagenet_c_root: <corruption>/<severity>/<wnid>/<image>  (the published ImageNet-C)
    imagenet_a_root: <wnid>/<image>  (200 wnids)
    imagenet_r_root: <wnid>/<image>  (200 wnids)
    imagenet_v2_root: imagenetv2-matched-frequency-format-val/<0..999>/<image>, and the
                     threshold0.7 and top-images folders beside it (the unpacked tarballs)
    imagenet_sketch_root: <wnid>/<image>  (the sketch/ folder of ImageNet-Sketch.zip, 1000 wnids)
    imagenet_p_root: <perturbation>/<wnid>/<name>.mp4  (the published ImageNet-P)
    cue_conflict_root: <shape>/<shape><n>-<texture><m>.png  (texture-vs-shape stimuli,
                     stimuli/style-transfer-preprocessed-512; 16 category folders)
"""
imagenet_root = 'data/imagenet'
imagenet_c_root = 'data/imagenet-c'
imagenet_a_root = 'data/imagenet-a'
imagenet_r_root = 'data/imagenet-r'
imagenet_v2_root = 'data/imagenetv2'
imagenet_sketch_root = 'data/imagenet-sketch/sketch'
imagenet_p_root = 'data/imagenet-p'
cue_conflict_root = 'data/cue-conflict'

# ImageNet-1K val: clean top-1, the reference for retention and relative mCE.
in1k = dict(dataset=dict(type='WnidImageFolder', data_root=imagenet_root, data_prefix='val'))

# ImageNet-C as downloaded (JPEG, 224x224). The tool picks corruptions and severities per cell.
in_c = dict(dataset=dict(type='ImageNetC', data_root=imagenet_c_root))

# ImageNet-C generated at load time from the clean val set (``--in-c-on-the-fly``), for those
# without the download. The images are first brought to 224x224 as ImageNet-C was made (resize
# 256, centre crop 224), corrupted with a per-image seed, and JPEG-compressed at quality 85 like
# the release; the random draws differ from the release, so numbers differ slightly.
in_c_on_the_fly = dict(
    dataset=dict(type='CorruptedImageNet', data_root=imagenet_root, data_prefix='val', seed=0),
    corruption_pipeline=[
        dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
             interpolation='bilinear'),
        dict(type='CenterCrop', crop_size=224),
        dict(type='ImageCorruption', jpeg_quality=85),
    ])

# ImageNet-A and ImageNet-R: 200-class subsets; predictions are restricted to those classes.
in_a = dict(dataset=dict(type='ImageNetA', data_root=imagenet_a_root))
in_r = dict(dataset=dict(type='ImageNetR', data_root=imagenet_r_root))

# ImageNet-V2: the tool picks the variants (--v2-variants); every class folder must hold images.
in_v2 = dict(dataset=dict(type='ImageNetV2', data_root=imagenet_v2_root))

# ImageNet-Sketch: all 1000 classes must be there.
in_sketch = dict(dataset=dict(type='ImageNetSketch', data_root=imagenet_sketch_root))

# ImageNet-ReaL: the clean val set scored against real.json (relative to data_root); every
# image real.json labels must be there.
in_real = dict(dataset=dict(type='ImageNetReaL', data_root=imagenet_root, data_prefix='val',
                            real_json='real.json'))

# AlexNet's ImageNet-P figures, the normalisers of FR, mFR and mT5D (as AlexNet's errors are of
# mCE): for each of the 10 benchmark perturbations, its flip probability in percent and its
# top-5 distance, e.g. dict(gaussian_noise=dict(flip_probability=..., top5_distance=...), ...).
# stl_mm does not ship them: the benchmark's author gives AlexNet's detailed results in a
# spreadsheet linked from github.com/hendrycks/robustness issue #49. None: the tables give flip
# probabilities and top-5 distances, and FR, mFR and mT5D are left out.
alexnet_imagenet_p = None

# ImageNet-P: one cell per perturbation, every frame of every video evaluated.
in_p = dict(dataset=dict(type='ImageNetP', data_root=imagenet_p_root),
            alexnet=alexnet_imagenet_p)

# ImageNet-P generated from the clean val set (``--in-p-on-the-fly``): short edge to 256 as the
# release, then each frame made and centre-cropped to 224; figures differ from the release.
in_p_on_the_fly = dict(
    dataset=dict(type='PerturbedImageNet', data_root=imagenet_root, data_prefix='val', seed=0),
    corruption_pipeline=[
        dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
             interpolation='bilinear'),
        dict(type='ImagePerturbation', crop_size=224),
    ],
    alexnet=alexnet_imagenet_p)

# Shape bias on the cue-conflict stimuli (16-class decisions from the 1000 outputs).
shape_bias = dict(dataset=dict(type='CueConflict', data_root=cue_conflict_root))
