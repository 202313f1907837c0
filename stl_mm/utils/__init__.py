from .checks import check_number, non_finite_tensors
from .fileio import (REPO_ROOT, TEMP_PREFIX, file_sha256, json_differences, json_sha256,
                     read_results_json, write_bytes)

__all__ = ['REPO_ROOT', 'TEMP_PREFIX', 'check_number', 'file_sha256', 'json_differences',
           'json_sha256', 'non_finite_tensors', 'read_results_json', 'write_bytes']
