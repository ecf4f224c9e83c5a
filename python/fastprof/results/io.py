"""Reading and writing results files: JSON-safe values, atomic writes, one-line read errors."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np


class ResultsFileError(ValueError):
    """A file that is not a readable fastprof results file; the message says why, in one line
    (line breaks quoted from the file are written as ``\\n``)."""

    def __init__(self, message: str) -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if all(type(v) is int or (type(v) is float and math.isfinite(v)) for v in obj):
            return list(obj)  # the long arrays of a result (marks, samples): nothing to convert
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "iub" or (obj.dtype.kind == "f" and bool(np.isfinite(obj).all())):
            return obj.tolist()
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _umask() -> int:
    """The process's umask (read from /proc where possible; os.umask otherwise, which has to set
    it to read it and sets it back at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename: readers never see a
    half-written file, and an interrupted write leaves the old file in place. The file gets the
    mode any new file gets under the user's umask (typically 0644), not the temporary file's 0600,
    so colleagues on a shared machine can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def scalar(v: Any) -> Any:
    """A value as one table cell: scalars as they are, anything else as compact JSON."""
    return v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v, sort_keys=True, default=str)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document in ``path``. Raises :class:`ResultsFileError` with a one-line reason for a
    missing, unreadable, empty, truncated or malformed file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ResultsFileError(f"{path} is a directory, not a results file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"cannot read {path}: {exc}") from None
    if not text.strip():
        raise ResultsFileError(f"{path} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (the file looks truncated)" if exc.pos >= len(text.rstrip()) - 1 else ""
        raise ResultsFileError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}{hint}") from None


def dataframe(rows: Iterable[dict[str, Any]]) -> Any:
    """A pandas DataFrame of flat rows (pandas is an optional dependency)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe() needs pandas: pip install 'fastprof[pandas]'") from None
    return pd.DataFrame(list(rows))
