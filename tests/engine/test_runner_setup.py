"""CPU distributed helpers of tools/train.py and tools/test.py."""
import torch
import torch.distributed as torch_dist
import torch.nn as nn

from stl_mm.engine.runner_setup import CPUDistributedDataParallel


def test_cpu_ddp_wrapper_turns_syncbn_into_bn_and_trains(tmp_path):
    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                                  world_size=1)
    try:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.ReLU())
        wrapped = CPUDistributedDataParallel(model, device_ids=None)
        norms = [m for m in wrapped.module.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert len(norms) == 1 and not isinstance(norms[0], nn.SyncBatchNorm)
        wrapped(torch.randn(2, 3, 8, 8)).sum().backward()
        assert wrapped.module[0].weight.grad is not None
    finally:
        torch_dist.destroy_process_group()
