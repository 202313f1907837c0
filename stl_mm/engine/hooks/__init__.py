from .frozen_teacher_hook import FrozenTeacherHook
from .load_checkpoint_hook import LoadCheckpointHook
from .non_finite_guard_hook import NonFiniteGuardHook, NonFiniteTrainingError
from .random_state_hook import RandomStateHook
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = ['FrozenTeacherHook', 'LoadCheckpointHook', 'NonFiniteGuardHook',
           'NonFiniteTrainingError', 'RandomStateHook', 'SafeCheckpointHook']
