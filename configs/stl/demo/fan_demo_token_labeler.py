# STL stage 1 on Fashion-MNIST (demo): the token labeler, trained with the class loss
# + alpha * CE(mean over tokens of the token logits, class target), alpha = 1, exactly as
# configs/stl/fan_*_token_labeler.py on ImageNet. Its last checkpoint,
# work_dirs/fan_demo_token_labeler/epoch_3.pth, is the teacher of fan_demo_student.py.
_base_ = ['./fan_demo_base.py']

model = dict(mode='labeler', labeler_weight=1.0)
