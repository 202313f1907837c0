from .frozen_teacher_hook import FrozenTeacherHook
from .load_checkpoint_hook import LoadCheckpointHook

__all__ = ['FrozenTeacherHook', 'LoadCheckpointHook']
