"""A video's figures: identity similarity to the person's photo and how much the picture moves.

Identity runs the Identity Similarity node's own code (``faces.embed.score_video``: the largest
face of each frame against the photo's, cosine). Motion is the mean length of OpenCV's
Farneback optical flow between consecutive frames, divided by the frame's longer side: 0.01
means the picture moved 1% of its width (or height) per frame on average. A still video scores
~0; it is a figure of how much moves, not of whether the motion is good.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

from ..faces import embed as embed_mod

_EMBEDDERS: dict = {}


def read_frames(path: str) -> np.ndarray:
    """[N, H, W, 3] uint8 RGB frames of a video file (mp4, webm, ...) or an animated WEBP/GIF."""
    if path.lower().endswith((".webp", ".gif")):
        from PIL import Image, ImageSequence
        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    else:
        cap = cv2.VideoCapture(path)
        frames = []
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
    if not frames:
        raise ValueError(f"no frames could be read from {path}")
    return np.stack(frames)


def motion(frames: np.ndarray) -> float:
    """Mean Farneback flow magnitude between consecutive frames, relative to the longer side."""
    if len(frames) < 2:
        return 0.0
    h, w = frames.shape[1:3]
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    levels = max(1, min(3, int(np.log2(max(8, min(h, w)) / 8))))
    window = max(5, min(15, min(h, w) // 8) | 1)
    mags = []
    for a, b in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, levels, window, 3, 5, 1.2, 0)
        mags.append(float(np.mean(np.linalg.norm(flow, axis=2))))
    return float(np.mean(mags)) / max(h, w)


def _embedder(choice: str, model_dirs=()):
    key = (choice, tuple(model_dirs))
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = embed_mod.load_embedder(choice, model_dirs)
    return _EMBEDDERS[key]


def identity(photo_rgb: np.ndarray, frames: np.ndarray, embedder: str = "auto", model_dirs=()) -> dict:
    """mean, min, p10 and face_share of the video's frames against the photo (None when no
    frame has a face); ``error`` instead when no embedder is installed or the photo has no face."""
    try:
        emb = _embedder(embedder, model_dirs)
        s = embed_mod.score_video(photo_rgb, frames, embedder=emb, model_dirs=model_dirs)
    except (embed_mod.EmbedderUnavailable, embed_mod.NoReferenceFace) as e:
        return {"error": str(e)}
    d = s.as_dict()
    low = f"p{embed_mod.LOW_PERCENTILE}"
    return {"embedder": d["embedder"], "mean": d["mean"], "min": d["min"], "p10": d[low],
            "face_share": d["face_share"], "frames": d["frames"], "faces": d["faces"],
            "threshold": d["threshold"]}


def read_photo(path: str) -> np.ndarray:
    from PIL import Image, ImageOps
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def score_file(video_path: str, photo_path: str, embedder: str = "auto", model_dirs=()) -> dict:
    frames = read_frames(video_path)
    return {"identity": identity(read_photo(photo_path), frames, embedder, model_dirs),
            "motion": round(motion(frames), 6), "frames": int(len(frames)),
            "size": f"{frames.shape[2]}x{frames.shape[1]}"}


def contact_frames(video_path: str, count: int = 4, height: int = 96) -> list[bytes]:
    """``count`` evenly spaced frames as small JPEGs (for the report's contact sheet)."""
    from PIL import Image
    frames = read_frames(video_path)
    idx = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    out = []
    for i in idx:
        im = Image.fromarray(frames[i])
        w = max(1, round(im.width * height / im.height))
        im = im.resize((w, height), Image.BILINEAR if im.height > height else Image.NEAREST)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
        out.append(buf.getvalue())
    return out
