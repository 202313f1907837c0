"""The package's one atomic file writer and one file fingerprint.

Checkpoints, ``last_checkpoint``, results files, reports, demo manifests and Cityscapes-C
images are all written through :func:`write_bytes`, so a process killed mid-write leaves the
old file or the new one under the final name, never a truncated one.
"""
import hashlib
import json
import os
import os.path as osp
import tempfile
from typing import Any, List

#: The checkout the package is installed from (editable install): configs/ and tools/ live here.
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: Temporary files start with this (hidden; a killed write can leave one, which readers skip).
TEMP_PREFIX = '.tmp-'


def write_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` atomically.

    The bytes go to ``TEMP_PREFIX<name>.<random>`` beside ``path``, are flushed to disk and
    renamed into place (``os.replace``, atomic on one file system). The temporary file is
    removed when writing fails; only ``kill -9`` can leave one behind.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f'{TEMP_PREFIX}{osp.basename(path)}.',
                                         dir=folder)
    try:
        with os.fdopen(handle, 'wb') as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if osp.exists(temporary):
            os.remove(temporary)
        raise


def json_sha256(value: Any) -> str:
    """SHA-256 of a JSON-like value (dict key order does not matter; other objects by repr)."""
    text = json.dumps(value.to_dict() if hasattr(value, 'to_dict') else value, sort_keys=True,
                      default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str) -> str:
    """SHA-256 of a file's content: a fingerprint that does not depend on its path."""
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def read_results_json(path: str, results_format: str) -> dict:
    """A results file written with ``format=results_format`` (robustness, benchmark).

    Raises:
        ValueError: The file cannot be read or parsed (``Cannot read the results file ...``),
            or it is not a ``results_format`` file (``... is not a <format> results file``:
            written by an older version or another tool). Callers add how to start fresh.
    """
    try:
        with open(path) as file:
            saved = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f'Cannot read the results file {path} ({error})')
    if not isinstance(saved, dict) or saved.get('format') != results_format:
        raise ValueError(f'{path} is not a {results_format} results file (written by an older '
                         'version or another tool)')
    return saved


def json_differences(saved: Any, current: Any, prefix: str = '') -> List[str]:
    """Dotted keys whose values differ between two JSON-like records, with both values."""
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f'{prefix}.{key}' if prefix else str(key)
            found += json_differences(saved.get(key), current.get(key), name)
        return found
    if saved == current:
        return []
    return [f'{prefix or "inputs"}: recorded {saved!r}, now {current!r}']
