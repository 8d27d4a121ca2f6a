"""Reference face preparation for Stand-In, without insightface.

Stand-In was trained on references prepared one way (the official
``preprocessor/image_input_preprocessor.py``): the largest face, a square of 1.5 x the
longer face-box side centred on the box, clipped to the image, padded to a square with
white, resized to 512 with area interpolation, and everything but the person painted
pure white. This module reproduces that geometry exactly for a given face box and finds
the box and the person without insightface or a face-parsing network:

* faces: YuNet (``cv2.FaceDetectorYN``) when the user has put its model file into one of
  ``model_dirs``; else BlazeFace short-range, bundled with the pack and run by OpenCV's
  own DNN module (OpenCV 4.8+ and 5.x); else OpenCV 4's Haar cascade. A MASK or a box from
  any other node replaces detection.
* the person: a subject MASK from any other node, the image's own alpha, or MediaPipe's
  selfie-segmentation model, bundled with the pack and run by OpenCV's DNN module.

Pure numpy / OpenCV; it imports without ComfyUI. Nothing here downloads anything or keeps
state between calls: the small networks are read from disk on every call.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

REFERENCE_SIZE = 512
# The official preprocessor's constants (FaceProcessor.process defaults).
FACE_CROP_SCALE = 1.5
BORDER_THRESH = 10

MODEL_FOLDER = "standin"
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_SIZE = 232589
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
YUNET_URL = ("https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
             "face_detection_yunet_2023mar.onnx")

# Both files are copied unchanged from the mediapipe 0.10.21 wheel on PyPI (Apache-2.0);
# models/README.md says where from. Their hashes are checked before use, so a file
# damaged by a partial checkout gives a clear error instead of wrong boxes.
BLAZEFACE_FILE = "face_detection_short_range.tflite"
BLAZEFACE_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
SELFIE_FILE = "selfie_segmentation.tflite"
SELFIE_SHA256 = "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"

HAAR_FILE = "haarcascade_frontalface_default.xml"

DETECTORS = ("auto", "yunet", "blazeface", "haar", "none")

# Score a face found in tiles must reach on its closer look (see _detect_blazeface).
TILE_MIN_SCORE = 0.8

# A face region smaller than this is blown up to 512 and loses the detail identity needs.
SMALL_CROP_WARN = 256


class FaceDetectorUnavailable(RuntimeError):
    """The detector the user chose cannot run here (missing model file or OpenCV feature)."""


@dataclass
class PreparedReference:
    image: np.ndarray            # float32 [size, size, 3] in [0, 1]: exactly the pixels that get VAE-encoded
    face_box: tuple | None       # (x1, y1, x2, y2) in source pixels of the face used, None if none
    crop: tuple                  # (x1, y1, x2, y2) crop rectangle in source pixels
    detector: str                # what located the face: "yunet", "blazeface", "haar", "face_mask", "face_box", "none"
    warnings: list[str]          # messages the user must see
    # Added beside the agreed fields (defaults keep the agreed constructor valid):
    background: str = "kept"     # what made the background white: "subject_mask", "alpha", "selfie", or "kept"
    mask: np.ndarray | None = field(default=None, repr=False)  # float32 [size, size], 1 = kept; None if kept whole


def detector_choices() -> list[str]:
    """The detectors that can run here, for the node's dropdown. OpenCV 5 removed the Haar
    cascades, so 'haar' is offered only with OpenCV 4; a saved workflow that names it elsewhere is
    mapped to 'auto' when queued (nodes/queue_check.py, REMOVED_VALUES)."""
    return [d for d in DETECTORS if d != "haar" or haar_available()]


def haar_available() -> bool:
    return hasattr(cv2, "CascadeClassifier")


def yunet_manifest_entry() -> dict:
    """weights_manifest.json entry for the optional YuNet face detector."""
    return {
        "name": YUNET_FILE,
        "aliases": [],
        "kind": "face_detector",
        "folder": MODEL_FOLDER,
        "base_model": "",
        "description": ("YuNet face detector (OpenCV Zoo, MIT licence), optional: Encode Reference "
                        "Face uses it instead of the bundled BlazeFace detector when present."),
        "url": YUNET_URL,
        "size": YUNET_SIZE,
        "sha256": YUNET_SHA256,
    }


# ----------------------------------------------------------------------------------------
# The official geometry


def official_crop(box, width: int, height: int, scale: float = FACE_CROP_SCALE,
                  border: int = BORDER_THRESH) -> tuple[tuple[int, int, int, int], bool]:
    """Crop rectangle (x1, y1, x2, y2) the official preprocessor cuts for a face box.

    Returns the rectangle and whether the box touched all four borders (then the whole
    image is used). Integer conversions are the official ones: the box is truncated with
    int(), centre and half side use floor division, and the half side is applied on both
    sides (so an odd side loses one pixel, as there).
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    if x1 <= border and y1 <= border and x2 >= width - border and y2 >= height - border:
        return (0, 0, width, height), True
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    half = int(max(x2 - x1, y2 - y1) * scale) // 2
    return (max(cx - half, 0), max(cy - half, 0), min(cx + half, width), min(cy + half, height)), False


def square_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding that makes an image square, split as officially."""
    if height > width:
        left = (height - width) // 2
        return 0, 0, left, height - width - left
    top = (width - height) // 2
    return top, width - height - top, 0, 0


def _crop_pad_resize(array: np.ndarray, crop, pad_value, size: int) -> np.ndarray:
    x1, y1, x2, y2 = crop
    part = array[y1:y2, x1:x2]
    top, bottom, left, right = square_padding(*part.shape[:2])
    pad = [(top, bottom), (left, right)] + [(0, 0)] * (part.ndim - 2)
    square = np.pad(part, pad, mode="constant", constant_values=pad_value)
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------------------
# Inputs


def _image_to_rgb8(image) -> tuple[np.ndarray, np.ndarray | None]:
    """One picture as uint8 RGB, plus its alpha in [0, 1] when it has one."""
    arr = np.asarray(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"prepare_reference takes one image, got a batch of {arr.shape[0]}: "
                             "pass the images one at a time.")
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape HxWxC with C = 1, 3 or 4, got shape {arr.shape}.")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"the image is empty (shape {arr.shape}).")
    if arr.dtype == np.uint8:
        arr8 = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("the image contains NaN or infinite values.")
        top = float(arr.max())
        if top > 1.0 + 1e-3:
            raise ValueError(f"a float image must hold values in [0, 1] (ComfyUI IMAGE), but its "
                             f"maximum is {top:g}: divide 0-255 pixel values by 255 first.")
        arr8 = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}: pass uint8 or float values in [0, 1].")
    alpha = None
    if arr8.shape[2] == 4:
        alpha = arr8[:, :, 3].astype(np.float32) / 255.0
        rgb = arr8[:, :, :3].astype(np.float32)
        # Transparent pixels are not part of the subject: show them as the white background.
        arr8 = np.rint(rgb * alpha[:, :, None] + 255.0 * (1.0 - alpha[:, :, None])).astype(np.uint8)
    elif arr8.shape[2] == 1:
        arr8 = np.repeat(arr8, 3, axis=2)
    return np.ascontiguousarray(arr8), alpha


def _mask_to_image_size(mask, name: str, height: int, width: int, warnings: list) -> np.ndarray:
    """An HxW float mask in [0, 1] of the image's size (a same-shaped picture may be resized)."""
    arr = np.asarray(mask)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be one HxW mask, got shape {np.asarray(mask).shape}: "
                         "pass the mask of this one image.")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = np.clip(arr.astype(np.float32), 0.0, 1.0)
    mh, mw = arr.shape
    if (mh, mw) != (height, width):
        if mh < 1 or mw < 1 or abs(mw / mh - width / height) > 0.02 * (width / height):
            raise ValueError(f"{name} is {mw}x{mh} but the image is {width}x{height}: a mask must "
                             "be made from this same image (same size, or the same picture scaled).")
        arr = cv2.resize(arr, (width, height), interpolation=cv2.INTER_LINEAR)
        warnings.append(f"{name} was {mw}x{mh}; it was scaled to the image's {width}x{height}.")
    return arr


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask >= 0.5)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _check_box(face_box, width: int, height: int) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in face_box)
    except (TypeError, ValueError):
        raise ValueError(f"face_box must be four numbers (x1, y1, x2, y2), got {face_box!r}.") from None
    if not all(np.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        raise ValueError(f"face_box {face_box!r} is not a box: it needs x1 < x2 and y1 < y2 "
                         "(left, top, right, bottom in pixels).")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise ValueError(f"face_box {face_box!r} lies outside the {width}x{height} image.")
    return x1, y1, x2, y2


# ----------------------------------------------------------------------------------------
# Detectors. Each returns a list of (x1, y1, x2, y2, score) in source pixels.


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_yunet(model_dirs) -> tuple[str | None, str | None]:
    """(path, None) for a verified YuNet file, (None, problem) for a wrong one, (None, None) if absent."""
    for folder in model_dirs or ():
        path = os.path.join(folder, YUNET_FILE)
        if not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        if size != YUNET_SIZE or _sha256(path) != YUNET_SHA256:
            return None, (f"{path} is not the YuNet model this pack expects ({size} bytes, expected "
                          f"{YUNET_SIZE} with sha256 {YUNET_SHA256[:12]}...): delete it and download "
                          f"it again from {YUNET_URL}")
        return path, None
    return None, None


def _bundled(name: str, sha256: str) -> str:
    path = os.path.join(BUNDLED_DIR, name)
    if not os.path.isfile(path):
        raise FaceDetectorUnavailable(f"{path} is missing from the pack: reinstall the pack "
                                      "(the file ships with it).")
    if _sha256(path) != sha256:
        raise FaceDetectorUnavailable(f"{path} is damaged (sha256 mismatch): reinstall the pack. If you "
                                      "cloned it with git-lfs or a CRLF conversion, clone it again plainly.")
    return path


def _read_tflite(path: str):
    if not hasattr(cv2.dnn, "readNetFromTFLite"):
        raise FaceDetectorUnavailable(f"OpenCV {cv2.__version__} cannot read TFLite models: "
                                      "install opencv-python 4.8 or newer.")
    # OpenCV 5's new DNN engine drops one of BlazeFace's two outputs; the classic engine
    # keeps both. OpenCV 4 has only the classic engine and no engine argument.
    classic = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
    if classic is not None:
        return cv2.dnn.readNetFromTFLite(path, engine=classic)
    return cv2.dnn.readNetFromTFLite(path)


def _blazeface_anchors() -> np.ndarray:
    # MediaPipe's SSD anchors for the short-range model: 128x128 input, strides 8, 16, 16, 16
    # (2 anchors per cell on the 16x16 grid, 6 on the 8x8 grid), centred, unit size.
    rows = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        centres = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], axis=1)
        rows.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(rows).astype(np.float32)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> list:
    """MediaPipe's 'weighted' suppression: overlapping boxes are averaged by score."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    alive = np.ones(len(scores), bool)
    out = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ix1 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy1 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix2 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy2 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        iou = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        group = alive & (iou > iou_thresh)
        w = scores[group]
        box = (boxes[group] * w[:, None]).sum(0) / w.sum()
        out.append((*box.tolist(), float(scores[i])))
        alive &= ~group
    return out


def blazeface_run(net, rgb: np.ndarray):
    """BlazeFace on a picture letterboxed into 128x128 as MediaPipe does (aspect ratio kept,
    black border, -1 after scaling). Returns the raw scores (logits, one per anchor), the
    regressions [anchors, 16] and (s, ox, oy): a 128-px coordinate x maps back to (x - ox) / s."""
    h, w = rgb.shape[:2]
    s = 128.0 / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((128, 128, 3), np.float32)
    ox, oy = (128 - nw) // 2, (128 - nh) // 2
    canvas[oy:oy + nh, ox:ox + nw] = small
    blob = (canvas / 127.5 - 1.0).transpose(2, 0, 1)[None]
    net.setInput(np.ascontiguousarray(blob, dtype=np.float32))
    scores_raw, regs = net.forward(["classificators", "regressors"])
    return scores_raw.reshape(-1), regs.reshape(-1, 16), (s, ox, oy)


def _blazeface_pass(net, rgb: np.ndarray, min_score: float, x0: int = 0, y0: int = 0) -> list:
    """One BlazeFace run on a picture letterboxed into 128x128; boxes offset by (x0, y0)."""
    scores_raw, regs, (s, ox, oy) = blazeface_run(net, rgb)
    scores = 1.0 / (1.0 + np.exp(-np.clip(scores_raw.astype(np.float64), -100.0, 100.0)))
    keep = scores >= min_score
    if not keep.any():
        return []
    anchors = _blazeface_anchors()[keep]
    r = regs.reshape(-1, 16)[keep] / 128.0
    cx, cy = r[:, 0] + anchors[:, 0], r[:, 1] + anchors[:, 1]
    boxes = np.stack([cx - r[:, 2] / 2, cy - r[:, 3] / 2, cx + r[:, 2] / 2, cy + r[:, 3] / 2], axis=1) * 128.0
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - ox) / s + x0
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - oy) / s + y0
    return _weighted_nms(boxes, scores[keep], 0.3)


def _tile_starts(n: int, side: int, step: int) -> list:
    starts = list(range(0, max(n - side, 0) + 1, step))
    if starts[-1] + side < n:
        starts.append(n - side)
    return starts


def _merge(found: list) -> list:
    if not found:
        return []
    arr = np.asarray(found, dtype=np.float64)
    return _weighted_nms(arr[:, :4], arr[:, 4], 0.3)


def _detect_blazeface(rgb: np.ndarray, min_score: float = 0.5) -> list:
    net = _read_tflite(_bundled(BLAZEFACE_FILE, BLAZEFACE_SHA256))
    h, w = rgb.shape[:2]
    longest = max(h, w)
    found = _blazeface_pass(net, rgb, min_score)
    confirm_score = min_score
    if not found:
        # The short-range model misses faces under ~6% of what it sees (a full-body photo):
        # look again in overlapping tiles of half and a quarter of the picture. Dozens of
        # looks find faces in texture at scores up to ~0.7 (coffee, hubble_deep_field,
        # stereo_motorcycle), while small real faces score above 0.9, hence the stricter bar.
        confirm_score = max(min_score, TILE_MIN_SCORE)
        for side in (longest // 2, longest // 4):
            if side < 96:
                break
            step = side // 2
            for y0 in _tile_starts(h, side, step):
                for x0 in _tile_starts(w, side, step):
                    found += _blazeface_pass(net, rgb[y0:y0 + side, x0:x0 + side], min_score, x0, y0)
            if found:
                found = _merge(found)
                break
    # A face that was small in the 128-pixel view has a coarse box (a pixel there is several
    # here), and the crop geometry depends on the box: look again at a zoomed square around
    # it and keep the sharper box. What the closer look does not confirm is dropped.
    result = []
    for x1, y1, x2, y2, score in sorted(found, key=lambda f: -(f[2] - f[0]) * (f[3] - f[1]))[:10]:
        side = max(x2 - x1, y2 - y1)
        if side >= longest / 3:
            if score >= confirm_score:
                result.append((x1, y1, x2, y2, score))
            continue
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 1.25 * side
        zx1, zy1 = max(0, int(cx - half)), max(0, int(cy - half))
        zx2, zy2 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
        closer = [f for f in _blazeface_pass(net, rgb[zy1:zy2, zx1:zx2], confirm_score, zx1, zy1)
                  if x1 <= (f[0] + f[2]) / 2 <= x2 and y1 <= (f[1] + f[3]) / 2 <= y2]
        if closer:
            result.append(max(closer, key=lambda f: f[4]))
    return _merge(result)


def _shrink(img: np.ndarray, limit: int = 640):
    """The picture scaled (area) so its long side is at most ``limit``, and the scale used.
    Detectors' cost grows with the pixel count and a reference face is large: 640 px suffice."""
    h, w = img.shape[:2]
    s = min(1.0, limit / max(h, w))
    if s < 1.0:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return img, s


def _detect_haar(rgb: np.ndarray) -> list:
    if not hasattr(cv2, "CascadeClassifier"):
        raise FaceDetectorUnavailable(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 removed CascadeClassifier): "
            "choose detector 'auto' or 'blazeface', or install opencv-python 4.x.")
    path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), HAAR_FILE)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FaceDetectorUnavailable(f"OpenCV's Haar cascade {path} could not be read: reinstall opencv-python 4.x.")
    gray, s = _shrink(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    min_side = max(24, min(gray.shape) // 10)
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    # The cascade gives no score; every kept box counts the same.
    return [(x / s, y / s, (x + bw) / s, (y + bh) / s, 1.0) for x, y, bw, bh in np.asarray(found).reshape(-1, 4)]


def _detect_yunet(rgb: np.ndarray, path: str, min_score: float = 0.6) -> list:
    if not hasattr(cv2, "FaceDetectorYN"):
        raise FaceDetectorUnavailable(f"OpenCV {cv2.__version__} has no FaceDetectorYN: install opencv-python 4.8 or newer.")
    bgr, s = _shrink(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    net = cv2.FaceDetectorYN.create(path, "", (bgr.shape[1], bgr.shape[0]), min_score, 0.3, 5000)
    _, faces = net.detect(bgr)
    if faces is None:
        return []
    # Rows: x, y, w, h, five landmarks (x, y), score.
    return [(f[0] / s, f[1] / s, (f[0] + f[2]) / s, (f[1] + f[3]) / s, float(f[14])) for f in faces]


def _pick_detector(detector: str, model_dirs, warnings: list):
    """(name, function rgb -> boxes) for the requested detector, or (None, None) for none."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}: choose one of {', '.join(DETECTORS)}.")
    if detector == "none":
        return "none", None
    if detector in ("auto", "yunet"):
        path, problem = find_yunet(model_dirs)
        if path is not None and hasattr(cv2, "FaceDetectorYN"):
            return "yunet", lambda rgb: _detect_yunet(rgb, path)
        if detector == "yunet":
            if problem:
                raise FaceDetectorUnavailable(problem)
            if path is not None:
                raise FaceDetectorUnavailable(f"OpenCV {cv2.__version__} has no FaceDetectorYN: install "
                                              "opencv-python 4.8 or newer, or choose detector 'auto'.")
            searched = ", ".join(model_dirs or ()) or "no folder was given"
            raise FaceDetectorUnavailable(
                f"detector 'yunet' needs {YUNET_FILE} in models/{MODEL_FOLDER}/ (searched: {searched}). "
                f"Download it from {YUNET_URL}, or choose detector 'auto'.")
        if problem:
            warnings.append(problem + " Using the bundled BlazeFace detector meanwhile.")
    if detector in ("auto", "blazeface"):
        try:
            _read_tflite(_bundled(BLAZEFACE_FILE, BLAZEFACE_SHA256))
            return "blazeface", _detect_blazeface
        except (FaceDetectorUnavailable, cv2.error) as e:
            if detector == "blazeface":
                raise FaceDetectorUnavailable(f"the bundled BlazeFace detector cannot run: {e}") from e
            reason = str(e)
    if detector == "haar":
        return "haar", _detect_haar
    if hasattr(cv2, "CascadeClassifier"):
        warnings.append(f"BlazeFace could not run ({reason}); using OpenCV's Haar cascade, which misses "
                        "more faces.")
        return "haar", _detect_haar
    warnings.append(f"No face detector can run here ({reason}). The whole image is used: connect a "
                    f"face MASK or box, or put {YUNET_FILE} into models/{MODEL_FOLDER}/.")
    return None, None


# ----------------------------------------------------------------------------------------
# Background


def _segment_person(rgb512: np.ndarray) -> np.ndarray:
    """MediaPipe selfie segmentation of the 512 crop: person probability, float32 [512, 512]."""
    net = _read_tflite(_bundled(SELFIE_FILE, SELFIE_SHA256))
    # The model takes the whole picture stretched to 256x256, RGB in [0, 1].
    small = cv2.resize(rgb512, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    net.setInput(np.ascontiguousarray(small.transpose(2, 0, 1)[None]))
    prob = net.forward().reshape(256, 256)
    return cv2.resize(prob, rgb512.shape[1::-1], interpolation=cv2.INTER_LINEAR)


def _box_in_output(box, crop, size: int) -> tuple[int, int, int, int]:
    """A source-pixel box mapped into the resized square's pixels."""
    x1, y1, x2, y2 = crop
    top, _, left, _ = square_padding(y2 - y1, x2 - x1)
    k = size / max(y2 - y1, x2 - x1)
    bx1, by1, bx2, by2 = box
    return (int(np.clip((bx1 - x1 + left) * k, 0, size)), int(np.clip((by1 - y1 + top) * k, 0, size)),
            int(np.clip(np.ceil((bx2 - x1 + left) * k), 0, size)),
            int(np.clip(np.ceil((by2 - y1 + top) * k), 0, size)))


# ----------------------------------------------------------------------------------------


def prepare_reference(image, subject_mask=None, face_mask=None, face_box=None, detector="auto",
                      white_background=True, size=REFERENCE_SIZE, model_dirs=None) -> PreparedReference:
    """Prepare one reference picture the way Stand-In's official preprocessor does.

    image: HxWxC (C = 1, 3 or 4), uint8 or float in [0, 1]; a leading batch axis of 1 is
    accepted. subject_mask: HxW, 1 = the person/subject to keep (white_background); the
    image's alpha channel serves when it is absent. face_mask / face_box: replace detection
    (face_box wins over face_mask). A mask of another size than the image is scaled to it
    when it has the same aspect ratio (with a warning); otherwise ValueError.
    detector: one of detector_choices(); "none" uses the whole image (an already cropped face).
    model_dirs: folders searched for optional detector files (YuNet).
    """
    warnings: list[str] = []
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}.")
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}: choose one of {', '.join(DETECTORS)}.")
    rgb, alpha = _image_to_rgb8(image)
    h, w = rgb.shape[:2]

    subject = None
    if subject_mask is not None:
        subject = _mask_to_image_size(subject_mask, "subject_mask", h, w, warnings)
        background_source = "subject_mask"
    elif alpha is not None and alpha.min() < 0.5:
        subject = alpha
        background_source = "alpha"

    # Where the face is: a box or mask from the user wins over detection.
    box, used, faces = None, None, []
    if face_box is not None:
        box, used = _check_box(face_box, w, h), "face_box"
        if face_mask is not None:
            warnings.append("Both face_box and face_mask were given; face_box is used.")
    elif face_mask is not None:
        fm = _mask_to_image_size(face_mask, "face_mask", h, w, warnings)
        box = _mask_box(fm)
        if box is not None:
            used = "face_mask"
        else:
            warnings.append("face_mask is empty; the face is detected instead.")
    if used is None:
        name, detect = _pick_detector(detector, model_dirs, warnings)
        used = name or "none"
        if detect is not None:
            faces = detect(rgb)
            if faces:
                # The official rule: the largest box by area.
                best = max(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]))
                box = tuple(float(v) for v in best[:4])
                if len(faces) > 1:
                    warnings.append(
                        f"{len(faces)} faces found; the largest one ({_fmt_box(box)}) is used. "
                        "To use another, connect a face box or face MASK.")
            else:
                warnings.append(
                    f"No face found by the {name} detector: the whole image is used, padded to a "
                    "square. If the picture has a face, connect a face MASK or box, or crop it by hand.")

    if box is not None:
        crop, whole = official_crop(box, w, h)
        if crop[2] - crop[0] < 1 or crop[3] - crop[1] < 1:
            warnings.append(f"The face box {_fmt_box(box)} is too small to crop around; the whole image is used.")
            crop = (0, 0, w, h)
    else:
        crop = (0, 0, w, h)

    out = _crop_pad_resize(rgb, crop, 255, size)
    cw, ch = crop[2] - crop[0], crop[3] - crop[1]
    if max(cw, ch) < min(SMALL_CROP_WARN, size):
        warnings.append(f"The reference is only {cw}x{ch} pixels before it is scaled to {size}x{size}; "
                        "a larger photo of the face keeps more of the identity.")

    keep = None
    background = "kept"
    if white_background:
        if subject is not None:
            keep = _crop_pad_resize(subject.astype(np.float32), crop, 0.0, size) >= 0.5
            background = background_source
            if not keep.any():
                warnings.append(f"The {background_source.replace('_', ' ')} keeps nothing of the cropped "
                                "reference, so the reference is all white: check that the mask marks the "
                                "person with white (1).")
        elif box is None and used != "none":
            warnings.append("The background is kept because no face was found to say where the person "
                            "is: connect a subject MASK to whiten it.")
        else:
            keep, background = _auto_subject(out, box, crop, size, warnings)
        if keep is not None:
            out = np.where(keep[:, :, None], out, np.uint8(255))

    for message in warnings:
        log.warning("Stand-In reference: %s", message)
    face = None if box is None else tuple(box)
    return PreparedReference(
        image=out.astype(np.float32) / 255.0, face_box=face, crop=tuple(int(v) for v in crop),
        detector=used, warnings=warnings, background=background,
        mask=None if keep is None else keep.astype(np.float32))


def _auto_subject(out: np.ndarray, box, crop, size: int, warnings: list):
    """Person mask of the resized crop from the bundled segmenter, or (None, 'kept') if unreliable."""
    try:
        keep = _segment_person(out) >= 0.5
    except (FaceDetectorUnavailable, cv2.error) as e:
        warnings.append(f"The background is kept: the built-in person segmentation cannot run ({e}). "
                        "Connect a subject MASK to whiten it.")
        return None, "kept"
    if box is not None:
        fx1, fy1, fx2, fy2 = _box_in_output(box, crop, size)
        inside = keep[fy1:fy2, fx1:fx2]
        face_kept = float(inside.mean()) if inside.size else 0.0
        if face_kept < 0.5:
            warnings.append(f"The background is kept: the built-in person segmentation kept only "
                            f"{face_kept:.0%} of the face. Connect a subject MASK to whiten it.")
            return None, "kept"
    elif keep.mean() < 0.02:
        warnings.append("The background is kept: the built-in person segmentation found no person. "
                        "Connect a subject MASK to whiten it.")
        return None, "kept"
    return keep, "selfie"


def _fmt_box(box) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"
