"""results.jsonl and failures.jsonl: one JSON object a line, each line one write.

A line is written with a single ``write`` on a file opened with O_APPEND (and, where the OS has
it, under an exclusive lock), then fsync'ed: two pilots on one folder never interleave, and a
crash leaves at most one line cut short. Readers skip such a line; the job it belonged to is
simply missing and runs again.
"""

from __future__ import annotations

import json
import os

try:
    import fcntl
except ImportError:  # Windows: O_APPEND alone
    fcntl = None

RESULTS = "results.jsonl"
FAILURES = "failures.jsonl"


def append(path: str, record: dict) -> None:
    line = (json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        # A previous writer killed mid-line left no newline: start on a fresh line so this
        # record stays readable.
        if os.fstat(fd).st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, "rb") as f:
        for raw in f:
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(record, dict):
                out.append(record)
    return out


def done(directory: str) -> dict:
    """key -> the first result recorded for it."""
    out = {}
    for r in read(os.path.join(directory, RESULTS)):
        out.setdefault(r.get("key"), r)
    return out
