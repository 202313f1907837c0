from .frozen_teacher_hook import FrozenTeacherHook

__all__ = ['FrozenTeacherHook']
