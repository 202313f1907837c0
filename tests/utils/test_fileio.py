"""stl_mm.utils.fileio: the one atomic writer and the content fingerprint."""
import hashlib
import os

import pytest

from stl_mm.utils import TEMP_PREFIX, file_sha256, write_bytes


class Killed(BaseException):
    """Stands for kill -9 (not an Exception: nothing may catch it and carry on)."""


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / 'last_checkpoint'
    write_bytes(b'epoch_1.pth', str(target))

    def interrupted(descriptor):
        raise Killed

    monkeypatch.setattr(os, 'fsync', interrupted)
    with pytest.raises(Killed):
        write_bytes(b'epoch_2.pth', str(target))
    assert target.read_bytes() == b'epoch_1.pth'
    assert [path.name for path in tmp_path.iterdir()] == ['last_checkpoint']


def test_the_temporary_file_is_hidden_beside_the_target(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def record(source, destination):
        seen.append(os.path.basename(source))
        real_replace(source, destination)

    monkeypatch.setattr(os, 'replace', record)
    write_bytes(b'x', str(tmp_path / 'sub' / 'epoch_3.pth'))
    assert len(seen) == 1 and seen[0].startswith(f'{TEMP_PREFIX}epoch_3.pth.')
    assert (tmp_path / 'sub' / 'epoch_3.pth').read_bytes() == b'x'


def test_fingerprint_is_the_content_sha256(tmp_path):
    first, second = tmp_path / 'a.pth', tmp_path / 'b.pth'
    first.write_bytes(b'weights' * 100_000)
    second.write_bytes(b'weights' * 100_000)
    assert file_sha256(str(first)) == file_sha256(str(second)) == hashlib.sha256(
        b'weights' * 100_000).hexdigest()
