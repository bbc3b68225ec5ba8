"""Files every layer writes and reads: atomic writes, JSON files, JSON or YAML option files."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import FaceMoGLEError


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call write(temporary path) in the same folder, then rename over `path`, so a crash never leaves half a file."""
    mode = _file_mode(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(temporary)
        os.chmod(temporary, mode)  # mkstemp's 0600 would make every output private to its writer
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _file_mode(path: Path) -> int:
    """The permissions a plain open() would give `path`: those it has, else 0o666 less the umask."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def remove_partial_writes(folder: Path) -> None:
    """Delete the temporaries that atomic_write leaves in `folder` when its process is killed mid-write."""
    for partial in Path(folder).glob(".*.tmp"):
        partial.unlink(missing_ok=True)


def write_json(path: Path, data, indent: int | None = 2) -> None:
    """`data` as JSON, written atomically."""
    text = json.dumps(data, indent=indent)
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def read_options(path: str | os.PathLike) -> dict:
    """A JSON or YAML file of options (YAML by its .yaml / .yml suffix); an empty YAML file is {}."""
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


# ----------------------------------------------------------------------------
# The processes of a distributed run waiting on each other's files (no collective, so no timeout)
# ----------------------------------------------------------------------------


PROCESS_STARTED = time.time()  # (about) when this process started: older failure markers are an earlier run's
STALE_MARGIN_S = 60.0  # the processes of one launch start within this of each other


class ProcessFailedError(FaceMoGLEError, RuntimeError):
    """Another process of the run failed; the message is its error."""


def failure_marker(folder: Path, rank: int) -> Path:
    """The file a failing process leaves, so the others stop instead of waiting for it."""
    return Path(folder) / f"FAILED_rank{rank}.txt"


def mark_failure(folder: Path, rank: int, error: BaseException) -> None:
    failure_marker(folder, rank).write_text(f"process {rank}: {type(error).__name__}: {error}")


def wait_for(
    folder: Path, done: Callable[[], bool], what: str, world_size: int, poll_seconds: float = 2.0
) -> None:
    """Wait, without a time limit, until done(); stop with the message of a process of this run that
    failed. Markers of ranks beyond world_size, or older than this process, are an earlier run's."""
    while not done():
        failures = [
            path for path in map(lambda r: failure_marker(folder, r), range(world_size)) if _current(path)
        ]
        if failures:
            raise ProcessFailedError(
                f"{what} failed in another process: {failures[0].read_text()}. Fix that and start again "
                "(finished work is kept)."
            )
        time.sleep(poll_seconds)


def _current(marker: Path) -> bool:
    try:
        return marker.stat().st_mtime >= PROCESS_STARTED - STALE_MARGIN_S
    except FileNotFoundError:
        return False


def run_share(folder: Path, rank: int, world_size: int, work: Callable[[], None], done: Callable[[], bool],
              what: str) -> None:  # fmt: skip
    """This process's share of a job whose results are files in `folder`: run work(); the first process
    then waits (without a time limit) until done(); a process that fails marks it, which stops the others."""
    failure_marker(folder, rank).unlink(missing_ok=True)
    try:
        work()
        if rank == 0:
            wait_for(folder, done, what, world_size)
    except ProcessFailedError:
        raise
    except BaseException as error:
        mark_failure(folder, rank, error)
        raise
