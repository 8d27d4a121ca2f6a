"""Write, sign, log, then publish (importable without ComfyUI).

A labelled save writes its files into a staging folder under ``user/__standin/staging``, signs
them there, appends the audit line, and only then places each file into ``output/``: by a hard
link (atomic, never over an existing file) when both are on one file system, otherwise by a copy
to a hidden name in the target folder and a link or rename from there. A reader of ``output/``
sees either nothing or a signed, logged file.

If anything fails after sampling, ``quarantine`` keeps what was generated (the frames as PNGs,
any staged file, and a note saying why) in ``user/__standin/quarantine/<id>/``, whose path the
error names.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import shutil
import tempfile
import uuid

import numpy as np

log = logging.getLogger(__name__)


def _stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")


def place(src: str, dst: str) -> None:
    """Puts ``src`` at ``dst`` atomically; FileExistsError if ``dst`` exists (never overwrites)."""
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    try:
        os.link(src, dst)
        os.remove(src)
        return
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
    # Another file system, or one without hard links: copy beside the target first, so the
    # last step is still a single rename in the target folder.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst) or ".", prefix=".standin-publishing-")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 8 * 2**20)
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(src, tmp)
        try:
            os.link(tmp, dst)
        except FileExistsError:
            raise
        except OSError:
            if os.path.exists(dst):
                raise FileExistsError(errno.EEXIST, "File exists", dst) from None
            os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    os.remove(src)


def write_frames(folder: str, frames) -> int:
    """Frames [N, H, W, C] float in [0, 1] as 8-bit PNGs frame_00001.png ...; returns N."""
    from PIL import Image
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[None]
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(a):
        rgb = np.clip(np.round(frame[..., :3].astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(folder, f"frame_{i + 1:05d}.png"))
    return len(a)


class Publication:
    """One labelled save's staging folder, its publication, and its quarantine on failure."""

    def __init__(self, state_dir: str, label: str | None = None):
        self.id = f"{_stamp()}-{(label or uuid.uuid4().hex)[:12]}-{uuid.uuid4().hex[:6]}"
        self.staging = os.path.join(state_dir, "staging", self.id)
        self.quarantine_dir = os.path.join(state_dir, "quarantine", self.id)
        self.published: list[str] = []

    def stage(self, name: str = "") -> str:
        """Where to write the file that will be published as ``name`` (no name: the folder)."""
        os.makedirs(self.staging, exist_ok=True)
        return os.path.join(self.staging, os.path.basename(name)) if name else self.staging

    def publish(self, staged: str, final: str) -> None:
        place(staged, final)
        self.published.append(final)

    def quarantine(self, reason: str, frames=None) -> tuple[str, int]:
        """Keeps the frames (an array, or a callable giving one) and whatever was staged; returns
        (folder, number of frames kept)."""
        folder = self.quarantine_dir
        os.makedirs(folder, exist_ok=True)
        kept = 0
        if frames is not None:
            try:
                kept = write_frames(os.path.join(folder, "frames"), frames() if callable(frames) else frames)
            except Exception:  # the staged files and the note must still be kept
                log.exception("Stand-In: could not write the quarantined frames to %s", folder)
        if os.path.isdir(self.staging):
            for name in os.listdir(self.staging):
                shutil.move(os.path.join(self.staging, name), os.path.join(folder, name))
        with open(os.path.join(folder, "REASON.txt"), "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(reason + "\n\nNothing from this save was placed in output/. The frames folder holds every "
                             "generated frame as PNG; any file here was written before the failure and is NOT a "
                             "labelled output (no valid manifest or no audit line).\n")
        log.error("Stand-In: the labelled save failed; %d frame(s) kept in %s: %s", kept, folder, reason)
        return folder, kept

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
