# STL stage 2 with a smaller teacher (paper Table 8, its best pairing): the FAN-L-Hybrid
# student learns from the token labels of the FAN-B-Hybrid token labeler
# (configs/stl/fan_b_token_labeler.py). Same grid (both stride 16 at 224x224); everything
# else is configs/stl/fan_l_student.py.
_base_ = ['./fan_l_student.py']

# The frozen teacher: the last checkpoint `python tools/train.py
# configs/stl/fan_b_token_labeler.py` leaves; override it with
#   --cfg-options default_hooks.teacher.checkpoint=PATH
default_hooks = dict(
    teacher=dict(
        model=dict(backbone=dict(arch='base-hybrid'), head=dict(in_channels=448)),
        checkpoint='work_dirs/fan_b_token_labeler/epoch_350.pth'))
