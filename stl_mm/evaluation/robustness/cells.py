"""Cells of a robustness evaluation and the one check of a corrupted cell against the clean set.

A cell is one dataset variant evaluated with the same model: the clean set, or one corruption
at one severity. Its name is ``clean`` or ``<corruption>/<severity>``.
"""
from collections import Counter
from typing import Hashable, List, Mapping, Optional, Sequence, Tuple

__all__ = ['CLEAN', 'cell_name', 'parse_cell_name', 'corruption_cells', 'check_cell',
           'count_note']

CLEAN = 'clean'


def cell_name(corruption: str, severity: int) -> str:
    """Name of a corrupted cell in results files and tables."""
    return f'{corruption}/{int(severity)}'


def parse_cell_name(name: str) -> Tuple[str, int]:
    """``'fog/3'`` -> ``('fog', 3)``."""
    corruption, _, severity = name.rpartition('/')
    return corruption, int(severity)


def corruption_cells(corruptions: Sequence[str], severities: Sequence[int]) -> List[str]:
    """Every (corruption, severity) cell name, corruption-major."""
    return [cell_name(c, s) for c in corruptions for s in severities]


def _examples(items: Sequence, limit: int = 3) -> str:
    shown = ', '.join(str(item) for item in items[:limit])
    return shown + (', ...' if len(items) > limit else '')


def check_cell(cell: str, clean: Mapping[Hashable, int], found: Mapping[Hashable, int],
               unit: str, fix: str, allow_incomplete: bool = False) -> Optional[str]:
    """Refuse a corrupted cell whose images do not match the clean set's.

    Both sets are given as counts per key: per class (wnid) for ImageNet-C, per image (relative
    path, count 1) for Cityscapes-C. A cell must have every key of the clean set, no other, and
    the same count under each.

    Args:
        cell: What the cell is, for the message (e.g. its folder).
        clean: Counts of the clean set.
        found: Counts of the cell.
        unit: What a key is, e.g. ``'class folders'`` or ``'images'``.
        fix: How to repair the cell, appended to the message.
        allow_incomplete: Return the message instead of raising (``--allow-incomplete``).

    Returns:
        None when the cell matches, else (only with ``allow_incomplete``) the message.

    Raises:
        SystemExit: The cell does not match and ``allow_incomplete`` is off.
    """
    clean, found = Counter(clean), Counter(found)
    if clean == found:
        return None
    missing = sorted(set(clean) - set(found), key=str)
    extra = sorted(set(found) - set(clean), key=str)
    short = [f'{key}: {found[key]} of {clean[key]}' for key in sorted(
        (key for key in set(clean) & set(found) if clean[key] != found[key]), key=str)]
    problems = [f'{len(keys)} {unit} {what} ({_examples(keys)})' for what, keys in (
        ('missing', missing), ('not in the clean set', extra),
        ('with another image count', short)) if keys]
    message = (f'{cell} does not match the clean set: {sum(found.values())} of '
               f'{sum(clean.values())} images; ' + '; '.join(problems) + f'. {fix}')
    if allow_incomplete:
        return message
    raise SystemExit(message + ' (--allow-incomplete evaluates it anyway and shows the image '
                     'count in the tables.)')


def count_note(cell: Mapping) -> str:
    """``' (n/N images)'`` for a cell evaluated on fewer or more images than the clean set."""
    expected, seen = cell.get('expected_samples'), cell.get('num_samples')
    if expected is None or seen == expected:
        return ''
    return f' ({seen}/{expected} images)'
