"""Byte-level text: a corpus as a uint8 array, and random windows of it for language models.

The offline default is real text that every Python installation has: the standard library's
own source files (`sysconfig.get_paths()["stdlib"]`), read in sorted order so the corpus is
the same on every run. A user's text file, or a folder of them, replaces it via a path.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
from jaxtyping import Int, UInt8

from .images import DatasetNotFoundError

__all__ = ["read_text_bytes", "split_corpus", "stdlib_corpus", "text_windows"]


def _read_files(files: list[Path], max_bytes: int | None) -> bytes:
    chunks, total = [], 0
    for file in files:
        data = file.read_bytes()
        if b"\0" in data:  # binary, not text
            continue
        chunks.append(data)
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    return b"".join(chunks)[:max_bytes]


def stdlib_corpus(max_bytes: int | None = 8_000_000) -> UInt8[np.ndarray, " n"]:
    """The Python standard library's `.py` sources (sorted by path), up to `max_bytes`."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    if not files:
        raise DatasetNotFoundError(f"no .py files under the standard library at {root}")
    return np.frombuffer(_read_files(files, max_bytes), np.uint8)


def read_text_bytes(path: str | Path, max_bytes: int | None = None) -> UInt8[np.ndarray, " n"]:
    """The bytes of a text file, or of every text file under a folder (sorted by path)."""
    path = Path(path).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        raise DatasetNotFoundError(
            f"data.path={str(path)!r}: no such file or folder. Give a text file (any encoding; "
            "it is read as bytes) or a folder of text files, or leave data.path unset for the "
            "offline default (the Python standard library's sources)."
        )
    data = _read_files(files, max_bytes)
    if not data:
        raise DatasetNotFoundError(f"data.path={str(path)!r} holds no text (empty or binary).")
    return np.frombuffer(data, np.uint8)


def split_corpus(
    corpus: UInt8[np.ndarray, " n"], eval_fraction: float
) -> tuple[UInt8[np.ndarray, " a"], UInt8[np.ndarray, " b"]]:
    """A contiguous split: the last `eval_fraction` of the bytes are held out."""
    cut = int(len(corpus) * (1 - eval_fraction))
    return corpus[:cut], corpus[cut:]


def text_windows(
    corpus: UInt8[np.ndarray, " n"], context: int, batch: int, rng: np.random.Generator
) -> Int[np.ndarray, "batch context_plus_1"]:
    """`batch` random windows of `context + 1` bytes (inputs and next-byte targets)."""
    if len(corpus) < context + 1:
        raise ValueError(
            f"the corpus has {len(corpus)} bytes, fewer than one window of context + 1 = "
            f"{context + 1}; use a shorter context or a larger corpus."
        )
    starts = rng.integers(0, len(corpus) - context, batch)
    return np.stack([corpus[s : s + context + 1] for s in starts]).astype(np.int32)
