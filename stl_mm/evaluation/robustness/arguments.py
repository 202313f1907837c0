"""Command-line options shared by the robustness tools (tools/analysis_tools/test_*.py and
tools/dataset_converters/gen_city_c.py)."""
import argparse
from typing import Callable, Optional, Sequence

from stl_mm.compat.imagecorruptions import ALL_CORRUPTIONS, SEVERITIES

__all__ = ['evaluation_parser', 'add_cell_arguments', 'add_evaluation_arguments',
           'selected_cells', 'at_least', 'prepare_evaluation']


def evaluation_parser(doc: str, config_help: str, checkpoint_help: str,
                      **kwargs) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc`` with the config and checkpoint."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0], **kwargs)
    parser.add_argument('config', help=config_help)
    parser.add_argument('checkpoint', help=checkpoint_help)
    return parser


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be at least {minimum}, got {value}')
        return value

    return parse


def add_cell_arguments(parser: argparse.ArgumentParser, default_corruptions: Sequence[str],
                       corruptions_help: str, severities_help: str = 'severities, 1 to 5'
                       ) -> None:
    """``--corruptions`` (any of the 19, or ``all``) and ``--severities`` (1 to 5)."""
    parser.add_argument('--corruptions', nargs='+', default=list(default_corruptions),
                        choices=ALL_CORRUPTIONS + ('all', ), metavar='NAME',
                        help=f'{corruptions_help}; any of {", ".join(ALL_CORRUPTIONS)}, or all')
    parser.add_argument('--severities', nargs='+', type=int, default=list(SEVERITIES),
                        choices=SEVERITIES, metavar='S', help=severities_help)


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-ema`` and ``--cfg-options``, which every evaluating tool takes."""
    from stl_mm.engine.runner_setup import DictAction, add_launcher_arguments
    parser.add_argument('--no-ema', action='store_true',
                        help='use the raw weights, not the EMA ones, of a checkpoint with both')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    add_launcher_arguments(parser)


def selected_cells(args: argparse.Namespace) -> argparse.Namespace:
    """Expand ``all``, drop repeated corruptions and sort the severities, in place."""
    corruptions = ALL_CORRUPTIONS if 'all' in args.corruptions else args.corruptions
    args.corruptions = list(dict.fromkeys(corruptions))
    args.severities = sorted(set(args.severities))
    return args


def prepare_evaluation(args: argparse.Namespace, work_dir: Optional[str] = None):
    """The resolved config of an evaluating tool's arguments (launcher set up).

    Args:
        args: Parsed arguments with ``config``, ``cfg_options``, ``launcher``, ``local_rank``.
        work_dir: Work directory; defaults to ``args.work_dir`` (then the config's).
    """
    from stl_mm.engine.runner_setup import parse_launcher_env, prepare_config
    parse_launcher_env(args.local_rank)
    return prepare_config(args.config, work_dir or getattr(args, 'work_dir', None),
                          args.cfg_options, args.launcher)
