"""Hook that loads ``load_from`` through the package's strict loading API."""
from typing import Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from stl_mm.models.backbones.fan_checkpoint import LoadReport, load_checkpoint
from stl_mm.registry import register


@register('HOOKS')
class LoadCheckpointHook(Hook):
    """Load a checkpoint into the runner's model with
    :func:`~stl_mm.models.backbones.fan_checkpoint.load_checkpoint`: strict, EMA weights
    first, official FAN / STL checkpoints as they are.

    :func:`~stl_mm.engine.runner_setup.build_runner` puts a config's ``load_from`` here
    (instead of mmengine's own, non-strict loading) unless the run resumes; ``--resume`` keeps
    mmengine's resume. The weights are loaded before the first training iteration (after
    mmengine initialised the model) or before testing, on every rank.

    Args:
        checkpoint: The checkpoint file (the config's ``load_from``).
        reinit: Model-key prefixes allowed to differ from the file, e.g. ``'head.'`` to
            fine-tune with a new head (the config's ``load_from_reinit``). They keep their
            initial values and the log lists them. Empty: the file must fit exactly.
        use_ema: The EMA rule of the loading API. Defaults to True.
    """

    priority = 'VERY_HIGH'  # before the hooks that read the model (teacher, EMA)

    def __init__(self,
                 checkpoint: str,
                 reinit: Union[str, Sequence[str]] = (),
                 use_ema: bool = True) -> None:
        self.checkpoint = checkpoint
        self.reinit = reinit
        self.use_ema = use_ema
        self.report: Optional[LoadReport] = None

    def _load(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.report = load_checkpoint(model, self.checkpoint, self.use_ema, reinit=self.reinit)
        if self.report.new:
            runner.logger.info(f'LoadCheckpointHook: re-initialised (kept their initial values, '
                               f'not loaded from {self.checkpoint}): {", ".join(self.report.new)}')

    def before_train(self, runner) -> None:
        """Load before the first iteration (mmengine has initialised the weights by then)."""
        self._load(runner)

    def before_test(self, runner) -> None:
        """Load before testing, so ``runner.test()`` never evaluates other weights."""
        self._load(runner)
