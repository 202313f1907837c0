from .checks import check_number, non_finite_tensors
from .fileio import REPO_ROOT, TEMP_PREFIX, file_sha256, json_sha256, write_bytes

__all__ = ['REPO_ROOT', 'TEMP_PREFIX', 'check_number', 'file_sha256', 'json_sha256',
           'non_finite_tensors', 'write_bytes']
