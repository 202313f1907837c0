"""Hook that attaches the frozen teacher of STL stage 2 (``default_hooks.teacher``)."""
import copy

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from stl_mm.models.classifiers.frozen_teacher import FrozenTeacher, check_teacher_settings
from stl_mm.registry import register


@register('HOOKS', codebases=('mmpretrain', ))
class FrozenTeacherHook(Hook):
    """Attach the teacher of a STL student: a thin adapter over
    :class:`~stl_mm.models.classifiers.FrozenTeacher`.

    At the start of every training run (also a resumed one) the hook builds the teacher from
    its own model config, so the teacher may be any FAN preset (heterogeneous teachers) or any
    model following the teacher protocol of
    :class:`~stl_mm.models.classifiers.TokenLabelingClassifier`.
    :meth:`FrozenTeacher.from_config` loads it strictly (EMA weights first; official FAN / STL
    checkpoints as they are), freezes and checks it; the hook checks its class count against
    the student's, moves it to the student's device and attaches it with ``set_teacher``.
    The teacher stays outside the student (not trained, not in the optimizer, the EMA model,
    DDP or the student checkpoints) and in eval mode.

    Validation and testing do not need the teacher, so ``tools/test.py`` on a student config
    does not read the teacher checkpoint.

    The student configs set it as ``default_hooks.teacher`` (so ``--cfg-options
    default_hooks.teacher.checkpoint=PATH`` reaches it).

    Args:
        model: Config of the teacher model, e.g. a ``TokenLabelingClassifier`` with a FAN
            backbone and a ``TokenLabelingHead(with_token_head=True)``.
        checkpoint: Teacher checkpoint: the stage-1 checkpoint from
            ``work_dirs/fan_<size>_token_labeler/``, or an official STL teacher (as is, or
            converted by ``tools/model_converters/fan_to_stl_mm.py``).
        use_ema: Load the EMA weights when the checkpoint has them. Defaults to True.
    """

    priority = 'ABOVE_NORMAL'  # before EMAHook (NORMAL)

    def __init__(self, model: dict, checkpoint: str, use_ema: bool = True) -> None:
        check_teacher_settings(model, checkpoint, use_ema)
        self.model_cfg = copy.deepcopy(model)
        self.checkpoint = checkpoint
        self.use_ema = use_ema

    def before_train(self, runner) -> None:
        """Build and attach the teacher (every run, so resuming reloads it too)."""
        student = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(student, 'set_teacher'):
            raise TypeError('FrozenTeacherHook needs a model with set_teacher() (a '
                            "TokenLabelingClassifier with mode='student'); got "
                            f'{type(student).__name__}.')
        teacher = self.frozen_teacher(runner.logger)
        teacher.check_student(student)
        student.set_teacher(teacher.to(next(student.parameters()).device))

    def frozen_teacher(self, logger=None) -> FrozenTeacher:
        """The :class:`FrozenTeacher` of this hook's config and checkpoint, logged."""
        teacher = FrozenTeacher.from_config(self.model_cfg, self.checkpoint, self.use_ema)
        if logger is not None:
            logger.info(f'FrozenTeacherHook: {teacher.describe()}.')
        return teacher

    def build_teacher(self, logger=None) -> nn.Module:
        """Build the teacher, load and freeze its weights and return it in eval mode."""
        return self.frozen_teacher(logger).module
