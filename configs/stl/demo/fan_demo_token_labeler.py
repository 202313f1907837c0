# STL stage 1 on Fashion-MNIST (demo): the token labeler, trained with the class loss
# + alpha * CE(mean over tokens of the token logits, class target), alpha = 1, exactly as
# configs/stl/fan_*_token_labeler.py on ImageNet. Its last checkpoint,
# work_dirs/fan_demo_token_labeler/epoch_10.pth, is the teacher of fan_demo_student.py.
_base_ = ['./fan_demo_base.py']

model = dict(mode='labeler', labeler_weight=1.0)

# A labeler is trained once and reused by every student, so it gets twice the students'
# epochs: after 5 epochs it reached 63% top-1 and its token labels made the student worse
# than the baseline (docs/demo.md); after 10, 74%.
max_epochs = 10
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
