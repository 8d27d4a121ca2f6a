"""The audit log: one JSON line per identity generation (importable without ComfyUI).

Appends are atomic with respect to each other and to crashes: each line is one ``write`` to a
file opened with O_APPEND, under an exclusive lock on a side file (so rotation, which renames
the log, is covered too). A line cut short by a crash is detected before the next append: it is
terminated with a newline (kept as evidence, counted as broken by ``read``) so the next line
starts clean. The log rotates at ``max_bytes``: audit.jsonl -> audit.jsonl.1 -> ... .N.
"""

from __future__ import annotations

import json
import logging
import os
import threading

log = logging.getLogger(__name__)

LOG_NAME = "audit.jsonl"
_thread_lock = threading.Lock()

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class _FileLock:
    def __init__(self, path: str):
        self.path = path
        self.fd = None

    def __enter__(self):
        _thread_lock.acquire()
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            else:
                msvcrt.locking(self.fd, msvcrt.LK_LOCK, 1)
        except BaseException:
            if self.fd is not None:
                os.close(self.fd)
            _thread_lock.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            else:
                os.lseek(self.fd, 0, os.SEEK_SET)
                msvcrt.locking(self.fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(self.fd)
            _thread_lock.release()


class AuditLog:
    def __init__(self, directory: str, max_bytes: int = 10 * 2**20, backups: int = 5, fsync: bool = True):
        self.directory = directory
        self.path = os.path.join(directory, LOG_NAME)
        self.max_bytes = int(max_bytes)
        self.backups = max(1, int(backups))
        self.fsync = fsync

    def _rotate(self) -> None:
        for i in range(self.backups - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")

    def append(self, entry: dict) -> bool:
        """Writes one line; returns True if a truncated last line was found (and terminated)."""
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
        if b"\n" in line[:-1]:
            raise ValueError("an audit entry must serialise to one line")
        os.makedirs(self.directory, exist_ok=True)
        repaired = False
        with _FileLock(self.path + ".lock"):
            try:
                size = os.path.getsize(self.path)
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                self._rotate()
                size = 0
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if size:
                    with open(self.path, "rb") as f:
                        f.seek(size - 1)
                        if f.read(1) != b"\n":
                            repaired = True
                if repaired:
                    log.warning("Stand-In audit log %s ended in a truncated line (an earlier crash?); it is "
                                "kept, terminated, and skipped by readers.", self.path)
                    line = b"\n" + line
                view = memoryview(line)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return repaired

    def files(self) -> list[str]:
        """Oldest first."""
        out = [f"{self.path}.{i}" for i in range(self.backups, 0, -1) if os.path.exists(f"{self.path}.{i}")]
        return out + ([self.path] if os.path.exists(self.path) else [])


def read(paths) -> tuple[list[dict], int]:
    """(well-formed entries, number of broken lines) over one log file or several."""
    if isinstance(paths, str):
        paths = [paths]
    entries, broken = [], 0
    for path in paths:
        with open(path, "rb") as f:
            for raw in f.read().split(b"\n"):
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    broken += 1
                    continue
                if isinstance(entry, dict):
                    entries.append(entry)
                else:
                    broken += 1
    return entries, broken
