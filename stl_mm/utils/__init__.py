from .fileio import TEMP_PREFIX, file_sha256, write_bytes

__all__ = ['TEMP_PREFIX', 'file_sha256', 'write_bytes']
