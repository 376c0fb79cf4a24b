"""Writes that are whole or absent: a killed run never leaves a half-written file or checkpoint.

Everything is written to a temporary sibling first (same folder, so the final rename stays on one
file system and is atomic), flushed to disk, then renamed into place. Pure Python: every layer
may use it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def _staging(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging(path)
    with open(staging, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, path)
    return path


def write_json(data: Any, path: str | os.PathLike) -> Path:
    return write_text(path, json.dumps(data, indent=1) + "\n")


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    return write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def replace_dir(staging: Path, target: Path) -> None:
    """Move the finished folder `staging` to `target`, replacing any previous one (the old one is
    renamed aside first, so `target` is never a mix of the two)."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(retired, ignore_errors=True)
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired)
    else:
        staging.rename(target)


def write_dir(target: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call `write(folder)` on a fresh temporary sibling of `target`, then swap it into place."""
    target = Path(target).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    write(staging)
    replace_dir(staging, target)
    return target
