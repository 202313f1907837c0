from .frozen_teacher_hook import FrozenTeacherHook
from .load_checkpoint_hook import LoadCheckpointHook
from .non_finite_guard_hook import NonFiniteGuardHook, NonFiniteTrainingError

__all__ = ['FrozenTeacherHook', 'LoadCheckpointHook', 'NonFiniteGuardHook',
           'NonFiniteTrainingError']
