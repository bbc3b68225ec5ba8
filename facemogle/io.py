"""Files every layer writes and reads: atomic writes, JSON files, JSON or YAML option files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call write(temporary path) in the same folder, then rename over `path`, so a crash never leaves half a file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
