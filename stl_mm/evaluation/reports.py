"""The one way stl_mm writes evaluation reports: Markdown, console and CSV tables, and strict
JSON written atomically."""
import csv
import io
import json
import math
from typing import Any, NamedTuple, Optional, Sequence

from stl_mm.utils import write_bytes

__all__ = ['Table', 'format_value', 'markdown_table', 'text_table', 'csv_table', 'render_tables',
           'write_json', 'write_text']


class Table(NamedTuple):
    """One table of a report: its title, column names and rows (numbers or text); any
    ``(title, header, rows)`` tuple renders the same."""
    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[Any]]


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


def csv_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """Comma-separated table, numbers formatted as in the other tables."""
    buffer = io.StringIO(newline='')
    csv.writer(buffer, lineterminator='\n').writerows(_cells(header, rows, digits))
    return buffer.getvalue()


def render_tables(tables: Sequence[Table], style: str = 'markdown', level: int = 2,
                  digits: int = 2) -> str:
    """Every table under its title, as Markdown sections (``level`` hashes) or console text.

    Args:
        tables: The tables, in order.
        style: ``'markdown'`` or ``'text'``.
        level: Heading level of the titles in Markdown.
        digits: Decimals of floats.
    """
    if style not in ('markdown', 'text'):
        raise ValueError(f"style must be 'markdown' or 'text', got {style!r}.")
    sections = []
    for title, header, rows in tables:
        if style == 'markdown':
            sections.append(f'{"#" * level} {title}\n\n' + markdown_table(header, rows, digits))
        else:
            sections.append(f'{title}\n' + text_table(header, rows, digits))
    return '\n\n'.join(sections) + '\n'


def write_text(text: str, path: str) -> None:
    """Write ``text`` (UTF-8) atomically (:func:`stl_mm.utils.write_bytes`)."""
    write_bytes(text.encode(), path)


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
    """Write ``data`` as strict JSON (NaN as null), atomically."""
    write_text(json.dumps(_strict(data), indent=indent, allow_nan=False) + '\n', path)
