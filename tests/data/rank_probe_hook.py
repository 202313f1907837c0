"""A test-only hook: each rank writes a fingerprint of its final parameters to the work dir.

Buffers (BatchNorm running statistics) are left out: like mmengine on GPUs, CPU DDP runs with
``broadcast_buffers=False``, so each rank keeps statistics of its own data shard.
"""
import hashlib
import os

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankProbeHook(Hook):

    def after_train(self, runner) -> None:
        digest = hashlib.sha256()
        for name, tensor in sorted(runner.model.named_parameters()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        path = os.path.join(runner.work_dir, f'rank{get_rank()}_of_{get_world_size()}.txt')
        with open(path, 'w') as f:
            f.write(digest.hexdigest())
