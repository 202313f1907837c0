"""Fixes for two upstream tool scripts, applied when ``import stl_mm`` runs inside them.

The OpenMMLab tools are scripts: ``python <pkg>/.mim/tools/...`` runs them as ``__main__`` and
they import ``stl_mm`` through a config's ``custom_imports``, after their own module-level code
has run. A fix to such a script can therefore only rebind a name in that ``__main__`` module,
before ``main()`` looks the name up. Each fix below first checks that ``__main__`` is exactly
the tool it is written for (file name and the upstream objects it imported), and does nothing
anywhere else:

* mmsegmentation 1.2.2 ``tools/analysis_tools/get_flops.py`` calls mmengine's
  ``get_model_complexity_info`` with both ``input_shape`` and ``inputs``; mmengine 0.10.7
  refuses that (``ValueError: "input_shape" and "inputs" cannot be both set.``) for every
  segmentor. The tool's ``inputs`` are the data preprocessor's output for an image of
  ``input_shape``, i.e. what the model really sees, so the fix drops ``input_shape`` when
  ``inputs`` is given.
* mmpretrain 1.2.0 ``tools/visualization/browse_dataset.py`` records ``results['img']`` after
  every transform and so shows only the student view of a :class:`DualView` pipeline. The fix
  adds the teacher view (what :class:`PackDualViewInputs` packs as ``teacher_inputs``) to the
  last recorded step, which the tool then draws as a second row (row 0: student ``img``,
  row 1: teacher view) in the ``transformed``, ``concat`` and ``pipeline`` modes.
"""
import functools
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

#: Key of the packed teacher view (stl_mm.datasets.transforms.PackDualViewInputs).
TEACHER_INPUTS_KEY = 'teacher_inputs'


def _running_tool(folder: str, script: str, **upstream_objects: str) -> Optional[ModuleType]:
    """``__main__`` if it is ``<folder>/<script>`` and imported each named object from the
    named package (e.g. ``BaseSegmentor='mmseg'``), else None."""
    main = sys.modules.get('__main__')
    path = Path(getattr(main, '__file__', None) or '')
    if path.parts[-2:] != (folder, script):
        return None
    for name, package in upstream_objects.items():
        module = getattr(getattr(main, name, None), '__module__', None) or ''
        if module.split('.')[0] != package:
            return None
    return main


def _inputs_over_shape(get_model_complexity_info: Callable) -> Callable:
    """``get_model_complexity_info`` that ignores ``input_shape`` when ``inputs`` are given."""

    @functools.wraps(get_model_complexity_info)
    def complexity_info(model: Any, input_shape: Any = None, inputs: Any = None,
                        **kwargs: Any) -> dict:
        if inputs is not None:
            input_shape = None
        return get_model_complexity_info(model, input_shape, inputs, **kwargs)

    return complexity_info


def _fix_mmseg_get_flops() -> None:
    main = _running_tool('analysis_tools', 'get_flops.py', BaseSegmentor='mmseg',
                         get_model_complexity_info='mmengine')
    if main is not None:
        main.get_model_complexity_info = _inputs_over_shape(main.get_model_complexity_info)


def _with_teacher_view(inspect_compose: type) -> type:
    """The browse tool's ``InspectCompose`` that also records the teacher view."""

    class DualViewInspectCompose(inspect_compose):
        """Records the teacher view beside the student view of the last recorded step."""

        def __call__(self, data: dict) -> Optional[dict]:
            first = len(self.intermediate_imgs)
            data = super().__call__(data)
            if (data is None or TEACHER_INPUTS_KEY not in data
                    or len(self.intermediate_imgs) == first):
                return data
            last = self.intermediate_imgs[-1]
            views = last['img'] if isinstance(last['img'], list) else [last['img']]
            teacher = data[TEACHER_INPUTS_KEY].permute(1, 2, 0).numpy()
            last.update(img=[*views, teacher], name=f"{last['name']} (student, teacher)")
            return data

    return DualViewInspectCompose


def _fix_mmpretrain_browse_dataset() -> None:
    main = _running_tool('visualization', 'browse_dataset.py',
                         UniversalVisualizer='mmpretrain', build_dataset='mmpretrain')
    if main is not None and isinstance(getattr(main, 'InspectCompose', None), type):
        main.InspectCompose = _with_teacher_view(main.InspectCompose)


_fix_mmseg_get_flops()
_fix_mmpretrain_browse_dataset()
