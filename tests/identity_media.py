"""Real photographs of different people, the variations of one photo a face embedder must see
through, and videos made from a photo, for the identity-similarity calibration, tests and bench.

People: scikit-image's astronaut (Eileen Collins), matplotlib's Grace Hopper portrait and
scikit-image's cameraman (grey), all real photographs that ship with installed packages.
"""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
from PIL import Image


def grace_hopper() -> np.ndarray:
    import matplotlib
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()


def cameraman() -> np.ndarray:
    from skimage import data
    return np.repeat(data.camera()[:, :, None], 3, axis=2)


PEOPLE = {"astronaut": astronaut, "grace_hopper": grace_hopper, "cameraman": cameraman}


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def rotate(rgb: np.ndarray, degrees: float, centre=None) -> np.ndarray:
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D(centre or (w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def scale(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=interp)


def crop_around(rgb: np.ndarray, box, margin: float, shift=(0.0, 0.0)) -> np.ndarray:
    """A crop of ``margin`` x the face box's longer side, centred on the box (moved by ``shift``
    face sizes), clipped to the picture."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box[:4]
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2 + shift[0] * side, (y1 + y2) / 2 + shift[1] * side
    half = margin * side / 2
    a, b = int(max(0, cx - half)), int(max(0, cy - half))
    c, d = int(min(w, cx + half)), int(min(h, cy + half))
    return np.ascontiguousarray(rgb[b:d, a:c])


def variations(rgb: np.ndarray, box) -> dict:
    """The same photo as a user or a video might show it: crops, a mirror, small rotations,
    JPEG, scaling, and a few of these together. ``box``: the face box in ``rgb``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    out = {
        "crop_tight": crop_around(rgb, box, 1.4),
        "crop_loose": crop_around(rgb, box, 3.0),
        "crop_offset": crop_around(rgb, box, 2.2, (0.3, 0.2)),
        "flip": np.ascontiguousarray(rgb[:, ::-1]),
        "jpeg_q20": jpeg(rgb, 20),
        "jpeg_q50": jpeg(rgb, 50),
        "scale_0.5": scale(rgb, 0.5),
        "scale_0.35": scale(rgb, 0.35),
        "scale_2": scale(rgb, 2.0),
    }
    for deg in (-10, -5, 5, 10):
        out[f"rotate_{deg}"] = rotate(rgb, deg, (cx, cy))
    out["flip_rotate_jpeg"] = jpeg(rotate(np.ascontiguousarray(rgb[:, ::-1]), 7), 40)
    out["scale_jpeg_crop"] = jpeg(crop_around(scale(rgb, 0.6), [v * 0.6 for v in box[:4]], 2.0), 35)
    return out


def video_from_photo(rgb: np.ndarray, box, frames: int = 81, width: int = 832, height: int = 480,
                     no_face=(), seed: int = 0) -> np.ndarray:
    """[frames, height, width, 3] uint8: a camera drifting and zooming over the photo (the face
    moves across the frame and grows from ~30% to ~60% of the height), with a little sway;
    frames listed in ``no_face`` show only the picture's background corner, blurred."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    side = max(box[2] - box[0], box[3] - box[1])
    cx0, cy0 = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    out = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        t = i / max(1, frames - 1)
        face_h = (0.3 + 0.3 * t) * height                 # zoom in
        k = face_h / side
        # the face slides from the left third to the right third, bobbing a little
        fx = width * (0.33 + 0.34 * t) + rng.normal(0, 3)
        fy = height * (0.5 + 0.06 * np.sin(6.28 * 2 * t)) + rng.normal(0, 3)
        angle = 4.0 * np.sin(6.28 * t)
        m = cv2.getRotationMatrix2D((cx0, cy0), angle, k)
        m[0, 2] += fx - cx0
        m[1, 2] += fy - cy0
        out[i] = cv2.warpAffine(rgb, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    for i in no_face:
        out[i] = no_face_frame(width, height, seed + i)
    return out


def no_face_frame(width: int = 832, height: int = 480, seed: int = 0) -> np.ndarray:
    """A frame with no face in it: skimage's coffee cup scaled to the frame, slightly shifted."""
    from skimage import data
    coffee = data.coffee()
    rng = np.random.default_rng(seed)
    frame = cv2.resize(coffee, (width + 40, height + 40), interpolation=cv2.INTER_AREA)
    dx, dy = rng.integers(0, 40, 2)
    return np.ascontiguousarray(frame[dy:dy + height, dx:dx + width])


def two_people_video(people, frames: int = 17, width: int = 384, height: int = 192, swap_from=None,
                     seed: int = 0) -> np.ndarray:
    """[frames, height, width, 3] uint8: two photos side by side, each half a camera drifting and
    zooming over its photo (``video_from_photo``). ``people``: [(rgb, face box), (rgb, face box)],
    left then right. From frame ``swap_from`` on, the halves are exchanged: each person appears
    where the other one was, at the same place in the picture."""
    half = width // 2
    left, right = (video_from_photo(rgb, box, frames, half, height, seed=seed + k)
                   for k, (rgb, box) in enumerate(people))
    out = np.concatenate([left, right], axis=2)
    if swap_from is not None:
        out[swap_from:] = np.concatenate([right[swap_from:], left[swap_from:]], axis=2)
    return np.ascontiguousarray(out)
