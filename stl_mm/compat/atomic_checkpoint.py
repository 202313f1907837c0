"""Write every checkpoint mmengine's runner saves to a local path atomically.

mmengine 0.10.7 writes a checkpoint with ``open(path, 'wb')``: a process killed while writing
leaves a truncated file under the final name, which ``--resume`` then fails to read. Here
:meth:`mmengine.runner.Runner.save_checkpoint` writes the bytes to a temporary file in the same
folder, flushes them to disk and renames the file into place (``os.replace``, atomic on one
file system), so a checkpoint file is either complete or absent. Checkpoints on other storage
backends (``s3://``, ``petrel://`` ...) keep mmengine's writer.
"""
import io
import os
import os.path as osp
import tempfile

import mmengine.runner.runner as mmengine_runner
import torch

_mmengine_save_checkpoint = mmengine_runner.save_checkpoint


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never seen half-written.

    The temporary file (``.<name>.<random>.tmp``, hidden from mmengine's checkpoint lookups) is
    removed when writing fails; only ``kill -9`` can leave one behind, never the final name.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(path)}.',
                                             suffix='.tmp')
    try:
        with os.fdopen(descriptor, 'wb') as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if osp.exists(temporary):
            os.remove(temporary)
        raise


def save_checkpoint_atomically(checkpoint: dict, filename: str, file_client_args=None,
                               backend_args=None) -> None:
    """mmengine's ``save_checkpoint`` with local files written by :func:`write_atomically`."""
    if '://' in str(filename) or file_client_args is not None or backend_args is not None:
        _mmengine_save_checkpoint(checkpoint, filename, file_client_args=file_client_args,
                                  backend_args=backend_args)
        return
    with io.BytesIO() as buffer:
        torch.save(checkpoint, buffer)
        write_atomically(str(filename), buffer.getvalue())


mmengine_runner.save_checkpoint = save_checkpoint_atomically
