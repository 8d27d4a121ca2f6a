"""The audit log: one JSON line per identity generation (importable without ComfyUI).

Appends are atomic with respect to each other and to crashes: each line is one ``write`` to a
file opened with O_APPEND, under an exclusive lock on a side file (so rotation, which renames
the log, is covered too). A line cut short by a crash is detected before the next append: it is
terminated with a newline (kept as evidence, counted as broken by ``read``) so the next line
starts clean.

The log rotates at ``max_bytes``: audit.jsonl -> audit.jsonl.1, .1 -> .2, ... Every rotated file
is kept unless ``delete_old_files`` is set, and then only files beyond ``backups`` go, each
deletion written into the log as its own event (name, sha256, line count). Every rotation starts
the new file with an ``audit_rotated`` event naming the file it closed and that file's sha256,
so a missing or edited file shows as a broken chain.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import logging
import os
import re
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


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _digest(path: str) -> tuple[str, int]:
    h, lines = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
            lines += block.count(b"\n")
    return h.hexdigest(), lines


class AuditLog:
    def __init__(self, directory: str, max_bytes: int = 10 * 2**20, backups: int = 5, fsync: bool = True,
                 delete_old_files: bool = False):
        self.directory = directory
        self.path = os.path.join(directory, LOG_NAME)
        self.max_bytes = int(max_bytes)
        self.backups = max(1, int(backups))
        self.delete_old_files = bool(delete_old_files)
        self.fsync = fsync

    def _numbers(self) -> list[int]:
        pattern = re.compile(re.escape(LOG_NAME) + r"\.(\d+)$")
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(pattern.match, names) if m)

    def _rotate(self) -> list[dict]:
        """Shifts every rotated file up by one (none is lost) and returns the events to write
        at the top of the new file."""
        sha, lines = _digest(self.path)
        numbers = self._numbers()
        deleted = []
        if self.delete_old_files:
            for i in [n for n in numbers if n >= self.backups]:
                old = f"{self.path}.{i}"
                old_sha, old_lines = _digest(old)
                os.remove(old)
                deleted.append({"file": os.path.basename(old), "sha256": old_sha, "lines": old_lines})
            numbers = [n for n in numbers if n < self.backups]
        for i in sorted(numbers, reverse=True):
            os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")
        events = [{"event": "audit_rotated", "time": _now(), "closed_file": LOG_NAME + ".1", "closed_sha256": sha,
                   "closed_lines": lines, "max_bytes": self.max_bytes,
                   "kept_files": len(numbers) + 1}]
        if deleted:
            events.append({"event": "audit_files_deleted", "time": _now(), "setting": "audit.delete_old_files",
                           "backups": self.backups, "deleted": deleted,
                           "note": "files before the rotation shifted names: each name is the one it had when "
                                   "deleted"})
            log.warning("Stand-In audit log: deleted %d old file(s) beyond %d backups (audit.delete_old_files "
                        "is on); the deletion is recorded in %s.", len(deleted), self.backups, self.path)
        return events

    def check_writable(self) -> None:
        """Raises OSError if the next append or rotation would fail: the folder cannot be made or
        written (rotation renames in it), or the log cannot be opened for appending (a folder in its
        place, no permission, an immutable file). Writes nothing into the log."""
        os.makedirs(self.directory, exist_ok=True)
        if os.path.isdir(self.path):
            raise IsADirectoryError(21, "Is a directory", self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)
        with _FileLock(self.path + ".lock"):
            probe = os.path.join(self.directory, f".probe-{os.getpid()}-{threading.get_ident()}")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            try:
                os.replace(probe, probe + ".renamed")
                # Linux refuses to link an append-only or immutable file, and rotation must rename
                # the log: where links work at all, a log that cannot be linked cannot rotate.
                try:
                    os.link(probe + ".renamed", probe)
                    links = True
                except OSError:
                    links = False
                if links and os.path.getsize(self.path):
                    os.remove(probe)
                    try:
                        os.link(self.path, probe)
                    except PermissionError:
                        raise PermissionError(errno.EPERM, "it cannot be renamed when it rotates (append-only "
                                                           "or immutable attribute? lsattr shows it)",
                                              self.path) from None
            finally:
                for leftover in (probe, probe + ".renamed"):
                    if os.path.lexists(leftover):
                        os.remove(leftover)

    def append(self, entry: dict) -> bool:
        """Writes one line; returns True if a truncated last line was found (and terminated)."""
        line = self._encode(entry)
        os.makedirs(self.directory, exist_ok=True)
        repaired = False
        with _FileLock(self.path + ".lock"):
            try:
                size = os.path.getsize(self.path)
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                events = self._rotate()
                size = 0
                line = b"".join(self._encode(e) for e in events) + line
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

    @staticmethod
    def _encode(entry: dict) -> bytes:
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
        if b"\n" in line[:-1]:
            raise ValueError("an audit entry must serialise to one line")
        return line

    def files(self) -> list[str]:
        """Every file of the log, oldest first."""
        out = [f"{self.path}.{i}" for i in sorted(self._numbers(), reverse=True)]
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
