# tiny_fan_cls plus a hook that fingerprints each rank's final weights.
_base_ = './tiny_fan_cls.py'
custom_imports = dict(imports=['stl_mm', 'rank_probe_hook'], allow_failed_imports=False)
custom_hooks = [dict(type='RankProbeHook')]
train_cfg = dict(max_epochs=1)
