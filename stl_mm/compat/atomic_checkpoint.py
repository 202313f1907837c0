"""Write every checkpoint mmengine's runner saves to a local path atomically.

mmengine 0.10.7 writes a checkpoint with ``open(path, 'wb')``: a process killed while writing
leaves a truncated file under the final name, which ``--resume`` then fails to read. Here
:meth:`mmengine.runner.Runner.save_checkpoint` writes the bytes to a temporary file in the same
folder, flushes them to disk and renames the file into place (``os.replace``, atomic on one
file system), so a checkpoint file is either complete or absent. Checkpoints on other storage
backends (``s3://``, ``petrel://`` ...) keep mmengine's writer.
"""
import io

import mmengine.runner.runner as mmengine_runner
import torch

from stl_mm.utils import write_bytes

_mmengine_save_checkpoint = mmengine_runner.save_checkpoint


def save_checkpoint_atomically(checkpoint: dict, filename: str, file_client_args=None,
                               backend_args=None) -> None:
    """mmengine's ``save_checkpoint``; local files go through :func:`stl_mm.utils.write_bytes`."""
    if '://' in str(filename) or file_client_args is not None or backend_args is not None:
        _mmengine_save_checkpoint(checkpoint, filename, file_client_args=file_client_args,
                                  backend_args=backend_args)
        return
    with io.BytesIO() as buffer:
        torch.save(checkpoint, buffer)
        write_bytes(buffer.getvalue(), str(filename))


mmengine_runner.save_checkpoint = save_checkpoint_atomically
