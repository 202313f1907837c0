# The Fashion-MNIST demo baseline: the student's FAN with the same data, augmentation and
# budget, trained with the class loss only (no token labels), like configs/fan/*_in1k.py.
_base_ = ['./fan_demo_base.py']

model = dict(mode='plain', head=dict(with_token_head=False))
