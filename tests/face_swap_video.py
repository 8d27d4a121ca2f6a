"""Test videos for face swap made from real photographs with a known motion per frame.

Each frame is scikit-image's astronaut moved by a known similarity transform (pan, zoom,
rotation about her face), so the true face region of every frame is known: the hand-measured
face box of the photograph, carried by that frame's transform.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# The astronaut's face in data.astronaut() (512x512), measured by hand on a 3x zoom: cheek to
# cheek, fringe to chin.
TRUE_FACE = (180.0, 72.0, 270.0, 178.0)
FACE_CENTRE = ((TRUE_FACE[0] + TRUE_FACE[2]) / 2, (TRUE_FACE[1] + TRUE_FACE[3]) / 2)


def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()


def no_face_photo() -> np.ndarray:
    from skimage import data
    return data.coffee()


def motion(i: int, n: int, width: int, height: int) -> tuple[float, float, float, float]:
    """(centre x, centre y, scale, degrees) of the face in frame i of n: a pan across the frame,
    a zoom in and out and a rotation back and forth."""
    t = i / max(n - 1, 1)
    scale = (min(width, height) / 512.0) * (0.9 + 0.35 * math.sin(math.pi * t))
    cx = width * (0.35 + 0.3 * t)
    cy = height * (0.45 + 0.08 * math.sin(2 * math.pi * t))
    angle = 20.0 * math.sin(2 * math.pi * t)
    return cx, cy, scale, angle


def frame_transform(i: int, n: int, width: int, height: int) -> np.ndarray:
    """2x3 matrix taking astronaut pixels to frame pixels for frame i."""
    cx, cy, scale, angle = motion(i, n, width, height)
    m = cv2.getRotationMatrix2D(FACE_CENTRE, angle, scale)
    m[:, 2] += (cx - FACE_CENTRE[0], cy - FACE_CENTRE[1])
    return m


def face_region(matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """The true face in a frame: the ellipse inscribed in TRUE_FACE, carried by the frame's
    transform (a face is round; the box's corners hold hair, collar or background)."""
    x1, y1, x2, y2 = TRUE_FACE
    photo = np.zeros((512, 512), np.uint8)
    cv2.ellipse(photo, (int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2))),
                (int(round((x2 - x1) / 2)), int(round((y2 - y1) / 2))), 0, 0, 360, 1, -1)
    return cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_NEAREST).astype(bool)


def face_quad(matrix: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = TRUE_FACE
    corners = np.array([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]], np.float32)
    return cv2.transform(corners, matrix)[0]


def quad_mask(quad: np.ndarray, height: int, width: int) -> np.ndarray:
    m = np.zeros((height, width), np.uint8)
    cv2.fillPoly(m, [np.round(quad * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return m.astype(bool)


def make_video(n: int, width: int, height: int, no_face: tuple = ()) -> tuple[np.ndarray, list]:
    """uint8 frames [n, height, width, 3] and each frame's 2x3 transform (None for the frames in
    ``no_face``, which show a photograph without a face)."""
    photo = astronaut()
    other = no_face_photo()
    frames = np.empty((n, height, width, 3), np.uint8)
    transforms = []
    for i in range(n):
        if i in no_face:
            frames[i] = cv2.resize(other, (width, height), interpolation=cv2.INTER_AREA)
            transforms.append(None)
            continue
        m = frame_transform(i, n, width, height)
        frames[i] = cv2.warpAffine(photo, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        transforms.append(m)
    return frames, transforms


def reference_to_photo(prepared) -> np.ndarray:
    """2x3 matrix taking prepared-reference pixels to astronaut pixels (crop, square pad, resize)."""
    x1, y1, x2, y2 = prepared.crop
    cw, ch = x2 - x1, y2 - y1
    side = max(cw, ch)
    top = (side - ch) // 2 if side > ch else 0
    left = (side - cw) // 2 if side > cw else 0
    k = side / prepared.image.shape[0]
    return np.array([[k, 0.0, x1 - left], [0.0, k, y1 - top]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer o inner for 2x3 affine matrices."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def write_video(path: str, frames: np.ndarray, fps: int = 16) -> None:
    """frames [n, h, w, 3] uint8 (even h and w) as an H.264 mp4, as a camera or editor would."""
    import av
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_workflow_input(input_dir: str) -> str:
    """The source video the face-swap example workflow loads, small enough for tiny models: 72x70,
    7 frames, which Prepare Face Swap Video crops to 64x64 and trims to 5."""
    import os
    from make_workflows import FACE_SWAP_VIDEO
    frames, _ = make_video(7, 72, 70)
    path = os.path.join(input_dir, FACE_SWAP_VIDEO)
    write_video(path, frames, fps=16)
    return path


def write_pose_control_input(input_dir: str, frames: int = 9, size: int = 64) -> str:
    """The control video the VACE example workflow loads: a stick figure raising its arms on
    black, as a pose preprocessor draws one, at the tiny models' size."""
    import os
    from make_workflows import POSE_VIDEO
    video = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        img = np.zeros((size, size, 3), np.uint8)
        neck, hip = (size // 2, size // 3), (size // 2, 2 * size // 3)
        cv2.circle(img, (size // 2, size // 5), size // 10, (255, 0, 0), -1)
        cv2.line(img, neck, hip, (0, 255, 0), 2)
        for side in (-1, 1):
            hand = (size // 2 + side * size // 3, int(size * (0.55 - 0.45 * t)))
            cv2.line(img, neck, hand, (0, 0, 255), 2)
            cv2.line(img, hip, (size // 2 + side * size // 6, size - 4), (255, 255, 0), 2)
        video.append(img)
    path = os.path.join(input_dir, POSE_VIDEO)
    write_video(path, np.stack(video), fps=16)
    return path
