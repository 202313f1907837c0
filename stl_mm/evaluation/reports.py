"""Small helpers to write evaluation reports: Markdown and console tables, strict JSON."""
import json
import math
from typing import Any, Optional, Sequence

__all__ = ['format_value', 'markdown_table', 'text_table', 'write_json']


def format_value(value: Any, digits: int = 2) -> str:
    """A table cell: floats with ``digits`` decimals, NaN / None as ``n/a``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def _cells(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int):
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f'Every table row needs {len(header)} cells (one per column of '
                         f'{list(header)}).')
    return [list(map(str, header))] + [[format_value(cell, digits) for cell in row]
                                       for row in rows]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """GitHub-flavoured Markdown table; the first column is left-aligned, the others right."""
    cells = _cells(header, rows, digits)
    rule = [':--'] + ['--:'] * (len(header) - 1)
    lines = [cells[0], rule] + cells[1:]
    return '\n'.join('| ' + ' | '.join(line) + ' |' for line in lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """Plain-text table with aligned columns, for printing."""
    cells = _cells(header, rows, digits)
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]

    def render(line):
        return '  '.join(cell.ljust(width) if column == 0 else cell.rjust(width)
                         for column, (cell, width) in enumerate(zip(line, widths)))

    rule = '  '.join('-' * width for width in widths)
    return '\n'.join([render(cells[0]), rule] + [render(line) for line in cells[1:]])


def _strict(value: Any) -> Any:
    """NaN and infinities become None: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    return value


def write_json(data: Any, path: str, indent: Optional[int] = 2) -> None:
    """Write ``data`` as strict JSON (NaN as null)."""
    with open(path, 'w') as file:
        json.dump(_strict(data), file, indent=indent, allow_nan=False)
        file.write('\n')
