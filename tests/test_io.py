"""Atomic writes: what they leave behind besides the file's content."""

import os


def test_atomic_writes_get_the_permissions_a_plain_write_would(tmp_path):
    from facemogle.io import atomic_write

    def text(temporary):
        with open(temporary, "w") as file:
            file.write("x")

    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "new.txt", text)
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        os.umask(0o077)
        atomic_write(tmp_path / "private.txt", text)
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
        (tmp_path / "new.txt").chmod(0o640)
        atomic_write(tmp_path / "new.txt", text)  # replacing a file keeps its permissions
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
