"""Identity similarity: how much each frame of a video looks like the reference person.

For every frame: the largest face (the pack's own detectors, ``face.py``), a face embedding,
and its cosine similarity to the reference's embedding. Frames without a face are reported
as such (``None``), never scored as zero. Two embedders:

* **dlib** — dlib's ResNet face embedder (``dlib_face_recognition_resnet_model_v1.dat``, CC0,
  99.38% on LFW) aligned by dlib's 5-point shape predictor. Optional Python packages:
  ``dlib-bin`` (prebuilt dlib) and ``face-recognition-models`` (the two model files); the
  two ``.dat`` files in ``models/standin/`` serve instead of the second package.
* **arcface** — an ArcFace-family ONNX model (insightface's ``w600k_r50.onnx``, the kind of
  model the papers measure with) when the user has put it into ``models/standin/``; run by
  onnxruntime when installed, else by OpenCV's DNN module. Aligned to the standard 112x112
  ArcFace template from BlazeFace's eye, nose and mouth keypoints.

Imports without ComfyUI; nothing here downloads anything or keeps state between calls.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import detect as face

log = logging.getLogger(__name__)

EMBEDDERS = ("auto", "dlib", "arcface")

DLIB_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
ARCFACE_FILE = "w600k_r50.onnx"
ARCFACE_URL = "https://huggingface.co/public-data/insightface/resolve/main/models/buffalo_l/w600k_r50.onnx"

DLIB_INSTALL = "pip install dlib-bin face-recognition-models"

# Cosine similarity above which two faces count as the same person. dlib: measured by
# tests/calibrate_identity.py on the real photographs available to the pack: the same person
# under crops, flips, rotations, JPEG and scaling scored 0.935-1.0, different people
# 0.80-0.896; 0.92 sits in the middle of that gap (README, "Identity similarity").
# ArcFace: insightface's customary verification bar for w600k_r50 (not measured here).
THRESHOLDS = {"dlib": 0.92, "arcface": 0.30}

# Faces smaller than this (longer box side, pixels) score unreliably: 25-px LFW faces of
# other people reached 0.936 against the calibration photos with dlib.
SMALL_FACE = 48

# Detector score a face in a video frame must reach. BlazeFace's own bar (0.5) passes a
# coffee cup at 0.51 in a frame without a face; real faces in the calibration videos score
# 0.87-0.94. The reference picture keeps the detector's bar (a face is expected there).
FRAME_MIN_SCORE = 0.6

# The 112x112 ArcFace alignment template (insightface's arcface_dst): eye on the image's
# left, eye on the image's right, nose tip, mouth corner left, mouth corner right.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
# Mouth-corner offset from the mouth centre, as a fraction of the eye-to-eye vector (template).
_MOUTH_HALF_WIDTH = float((ARCFACE_TEMPLATE[4, 0] - ARCFACE_TEMPLATE[3, 0])
                          / (ARCFACE_TEMPLATE[1, 0] - ARCFACE_TEMPLATE[0, 0]) / 2)

LOW_PERCENTILE = 10


class EmbedderUnavailable(RuntimeError):
    """The chosen face embedder cannot run here; the message says what to install or where to put what."""


class NoReferenceFace(ValueError):
    """No face in the reference picture."""


# ----------------------------------------------------------------------------------------
# Pictures


def to_rgb8(image) -> np.ndarray:
    """HxWx3 (or HxW, HxWx1, HxWx4) uint8 or float [0, 1] -> contiguous uint8 RGB."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"expected a picture of shape HxWx3, got {tuple(a.shape)}.")
    if a.dtype != np.uint8:
        a = np.clip(np.round(np.nan_to_num(a.astype(np.float32)) * 255.0), 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


# ----------------------------------------------------------------------------------------
# Embedders


def _find_file(name: str, model_dirs) -> str | None:
    for d in model_dirs or ():
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
    return None


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n == 0.0:
        raise ValueError("the face embedder returned an empty or invalid vector.")
    return v / n


def _packaged_dlib_models() -> tuple[str, str] | None:
    """The two model files of the face-recognition-models package, found without importing it
    (its __init__ imports pkg_resources, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        files = tuple(os.path.join(root, "models", n) for n in (DLIB_RECOGNITION_FILE, DLIB_LANDMARKS_FILE))
        if all(os.path.isfile(f) for f in files):
            return files
    return None


class DlibEmbedder:
    """dlib's ResNet (128-d) on dlib's own 5-point alignment (150 px chip, 25% padding)."""
    kind = "dlib"
    name = "dlib_resnet_v1"

    def __init__(self, model_dirs=()):
        if importlib.util.find_spec("dlib") is None:
            raise EmbedderUnavailable(
                f"The dlib face embedder needs the optional packages dlib-bin and face-recognition-models: "
                f"run `{DLIB_INSTALL}` with ComfyUI's Python and restart ComfyUI (or put {ARCFACE_FILE} "
                f"into models/{face.MODEL_FOLDER}/ and choose the arcface embedder).")
        import dlib
        recognition, landmarks = _find_file(DLIB_RECOGNITION_FILE, model_dirs), _find_file(DLIB_LANDMARKS_FILE, model_dirs)
        if recognition is None or landmarks is None:
            packaged = _packaged_dlib_models()
            if packaged is None:
                raise EmbedderUnavailable(
                    f"dlib is installed but its face models are not: run `pip install face-recognition-models` "
                    f"with ComfyUI's Python, or put {DLIB_RECOGNITION_FILE} and {DLIB_LANDMARKS_FILE} into "
                    f"models/{face.MODEL_FOLDER}/.")
            recognition = recognition or packaged[0]
            landmarks = landmarks or packaged[1]
        try:
            self._landmarks = dlib.shape_predictor(landmarks)
            self._net = dlib.face_recognition_model_v1(recognition)
        except RuntimeError as e:
            raise EmbedderUnavailable(f"dlib could not read its face models ({recognition}, {landmarks}): {e}. "
                                      "Reinstall face-recognition-models.") from e
        self._dlib = dlib

    def embed(self, rgb: np.ndarray, box) -> np.ndarray:
        x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
        shape = self._landmarks(rgb, self._dlib.rectangle(x1, y1, x2, y2))
        return _unit(self._net.compute_face_descriptor(rgb, shape))


def _blazeface_keypoints(net, rgb: np.ndarray, box) -> np.ndarray | None:
    """BlazeFace's six keypoints (eyes, nose tip, mouth centre, ears) of the face in ``box``.

    One look at a square around the box, letterboxed into 128x128 as in face.py; the
    detection whose centre lies inside the box and scores best wins."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box[:4]
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 1.25 * max(x2 - x1, y2 - y1)
    zx1, zy1 = max(0, int(cx - half)), max(0, int(cy - half))
    zx2, zy2 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
    crop = rgb[zy1:zy2, zx1:zx2]
    ch, cw = crop.shape[:2]
    if ch < 2 or cw < 2:
        return None
    scores, regs, (s, ox, oy) = face.blazeface_run(net, crop)
    anchors = face._blazeface_anchors()
    best, best_score = None, -np.inf
    for i in np.argsort(-scores)[:64]:
        r = regs[i] / 128.0
        fx, fy = (r[0] + anchors[i, 0]) * 128.0, (r[1] + anchors[i, 1]) * 128.0
        fx, fy = (fx - ox) / s + zx1, (fy - oy) / s + zy1
        if x1 <= fx <= x2 and y1 <= fy <= y2 and scores[i] > best_score:
            best, best_score = i, scores[i]
            break  # sorted by score: the first inside is the best
    if best is None:
        return None
    kp = (regs[best, 4:16].reshape(6, 2) / 128.0 + anchors[best]) * 128.0
    kp[:, 0] = (kp[:, 0] - ox) / s + zx1
    kp[:, 1] = (kp[:, 1] - oy) / s + zy1
    return kp.astype(np.float32)


def arcface_points(keypoints: np.ndarray) -> np.ndarray:
    """The template's five points from BlazeFace's six: the mouth corners are placed beside
    the mouth centre along the eye line, at the template's mouth-to-eye width ratio."""
    eye_a, eye_b, nose, mouth = keypoints[0], keypoints[1], keypoints[2], keypoints[3]
    if eye_a[0] > eye_b[0]:
        eye_a, eye_b = eye_b, eye_a
    d = (eye_b - eye_a) * _MOUTH_HALF_WIDTH
    return np.stack([eye_a, eye_b, nose, mouth - d, mouth + d]).astype(np.float32)


def align_arcface(rgb: np.ndarray, points: np.ndarray, size: int = 112) -> np.ndarray:
    m, _ = cv2.estimateAffinePartial2D(points, ARCFACE_TEMPLATE * (size / 112.0), method=cv2.LMEDS)
    if m is None:
        raise ValueError("the face's keypoints are degenerate.")
    return cv2.warpAffine(rgb, m, (size, size), borderValue=0.0)


class ArcFaceEmbedder:
    """An insightface-style ArcFace ONNX model: 112x112 aligned RGB, (x - 127.5) / 127.5."""
    kind = "arcface"

    def __init__(self, path: str):
        self.path = path
        self.name = "arcface:" + os.path.basename(path)
        self._session = None
        self._net = None
        try:
            if importlib.util.find_spec("onnxruntime") is not None:
                import onnxruntime
                self._session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
                self._input = self._session.get_inputs()[0].name
                self.runtime = "onnxruntime"
            else:
                self._net = cv2.dnn.readNetFromONNX(path)
                self.runtime = "opencv"
        except Exception as e:  # noqa: BLE001 - any reader error means the same to the user
            raise EmbedderUnavailable(f"{path} could not be loaded as an ONNX face embedder ({e}). Replace it with "
                                      f"{ARCFACE_FILE} from {ARCFACE_URL}.") from e
        self._detector_net = face._read_tflite(face._bundled(face.BLAZEFACE_FILE, face.BLAZEFACE_SHA256))

    def embed(self, rgb: np.ndarray, box) -> np.ndarray:
        kp = _blazeface_keypoints(self._detector_net, rgb, box)
        if kp is None:
            # No keypoints at this box (another detector's box, a hard angle): centre the
            # box in the template's face region instead of giving up on the frame.
            x1, y1, x2, y2 = box[:4]
            w, h = x2 - x1, y2 - y1
            kp = np.array([[x1 + 0.3 * w, y1 + 0.4 * h], [x1 + 0.7 * w, y1 + 0.4 * h], [x1 + 0.5 * w, y1 + 0.6 * h],
                           [x1 + 0.5 * w, y1 + 0.8 * h]], dtype=np.float32)
        chip = align_arcface(rgb, arcface_points(kp))
        blob = ((chip.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        blob = np.ascontiguousarray(blob)
        if self._session is not None:
            out = self._session.run(None, {self._input: blob})[0]
        else:
            self._net.setInput(blob)
            out = self._net.forward()
        return _unit(out)


def find_arcface(model_dirs) -> str | None:
    return _find_file(ARCFACE_FILE, model_dirs)


def load_embedder(choice: str = "auto", model_dirs=()):
    """The embedder for ``choice`` (one of EMBEDDERS). auto: ArcFace when its file is in one of
    ``model_dirs`` (numbers comparable with the papers'), else dlib."""
    if choice not in EMBEDDERS:
        raise ValueError(f"unknown embedder {choice!r}: choose one of {', '.join(EMBEDDERS)}.")
    if choice in ("auto", "arcface"):
        path = find_arcface(model_dirs)
        if path is not None:
            return ArcFaceEmbedder(path)
        if choice == "arcface":
            searched = ", ".join(model_dirs or ()) or "no folder was given"
            raise EmbedderUnavailable(
                f"The arcface embedder needs {ARCFACE_FILE} in models/{face.MODEL_FOLDER}/ (searched: {searched}). "
                f"Download it from {ARCFACE_URL} (insightface's buffalo_l recognition model, non-commercial "
                f"research licence), or choose the dlib embedder.")
    try:
        return DlibEmbedder(model_dirs)
    except EmbedderUnavailable as e:
        if choice == "auto":
            raise EmbedderUnavailable(
                f"No face embedder is available. Either run `{DLIB_INSTALL}` with ComfyUI's Python and restart "
                f"ComfyUI (dlib's embedder, CC0 weights, ~140 MB), or put {ARCFACE_FILE} into "
                f"models/{face.MODEL_FOLDER}/ ({ARCFACE_URL}). ({e})") from None
        raise


# ----------------------------------------------------------------------------------------
# Scoring


@dataclass
class FaceEmbedding:
    vector: np.ndarray
    box: tuple
    faces: int          # how many faces the detector saw in the picture


def embed_largest_face(rgb: np.ndarray, embedder, detect, min_score: float = 0.0) -> FaceEmbedding | None:
    """Embedding of the largest face ``detect`` finds scoring at least ``min_score`` (the whole
    picture when detect is None)."""
    h, w = rgb.shape[:2]
    if detect is None:
        boxes = [(0.0, 0.0, float(w), float(h), 1.0)]
    else:
        boxes = [b for b in detect(rgb) if b[4] >= min_score]
    if not boxes:
        return None
    best = max(boxes, key=_area)
    box = (max(0.0, best[0]), max(0.0, best[1]), min(float(w), best[2]), min(float(h), best[3]))
    if _area(box) < 1.0:
        return None
    return FaceEmbedding(embedder.embed(rgb, box), tuple(float(v) for v in box), len(boxes))


@dataclass
class IdentityScore:
    embedder: str
    detector: str
    threshold: float
    per_frame: list            # cosine similarity per frame, None where no face was found
    boxes: list = field(default_factory=list)
    reference_box: tuple | None = None
    warnings: list = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.per_frame)

    @property
    def scored(self) -> list:
        return [v for v in self.per_frame if v is not None]

    @property
    def faces(self) -> int:
        return len(self.scored)

    @property
    def face_share(self) -> float:
        return self.faces / self.frames if self.frames else 0.0

    def _stat(self, fn):
        v = self.scored
        return float(fn(np.asarray(v))) if v else None

    @property
    def mean(self):
        return self._stat(np.mean)

    @property
    def min(self):
        return self._stat(np.min)

    @property
    def low(self):
        """The LOW_PERCENTILE-th percentile: the level most frames stay above."""
        return self._stat(lambda a: np.percentile(a, LOW_PERCENTILE))

    @property
    def below(self) -> int:
        return sum(1 for v in self.scored if v < self.threshold)

    @property
    def no_face_frames(self) -> list:
        return [i for i, v in enumerate(self.per_frame) if v is None]

    def as_dict(self) -> dict:
        r = (lambda v: None if v is None else round(v, 4))
        return {"embedder": self.embedder, "frames": self.frames, "faces": self.faces, "mean": r(self.mean),
                "min": r(self.min), f"p{LOW_PERCENTILE}": r(self.low), "face_share": round(self.face_share, 4),
                "threshold": self.threshold, "below_threshold": self.below, "detector": self.detector,
                "no_face_frames": self.no_face_frames, "per_frame": [r(v) for v in self.per_frame]}

    def summary(self) -> str:
        """The figures as a few lines of text for the canvas."""
        f = (lambda v: "n/a" if v is None else f"{v:.3f}")
        lines = [f"Identity similarity ({self.embedder}, cosine; same person above {self.threshold:.2f})",
                 f"faces found: {self.faces}/{self.frames} frames ({self.face_share:.0%})"]
        if self.faces:
            lines.append(f"mean {f(self.mean)}   min {f(self.min)}   p{LOW_PERCENTILE} {f(self.low)}")
            lines.append(f"frames below {self.threshold:.2f}: {self.below}")
        else:
            lines.append("no face in any frame: nothing to score")
        if self.no_face_frames:
            lines.append("no face in frames: " + _ranges(self.no_face_frames))
        lines += self.warnings
        return "\n".join(lines)


def _ranges(idx: list) -> str:
    out, start = [], None
    for i, v in enumerate(idx):
        if start is None:
            start = v
        if i + 1 == len(idx) or idx[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def score_video(reference, frames, embedder="auto", detector="auto", model_dirs=(), threshold=None,
                progress=None) -> IdentityScore:
    """Cosine similarity of the reference's face to the largest face of every frame.

    reference: one picture (HxWx3, uint8 or float in [0, 1]); frames: a sequence or an
    [N, H, W, 3] array. embedder: a name from EMBEDDERS or an embedder object. threshold:
    None for the embedder's calibrated one. progress(i, n) is called after each frame.
    """
    warnings: list = []
    emb = load_embedder(embedder, model_dirs) if isinstance(embedder, str) else embedder
    det_name, detect = face._pick_detector(detector, model_dirs, warnings)
    det_name = det_name or "none"
    ref = embed_largest_face(to_rgb8(reference), emb, detect)
    if ref is None:
        raise NoReferenceFace(
            f"No face found in the reference by the {det_name} detector: connect a photo where the face is "
            "clearly visible, frontal and at least about 40 pixels wide, or choose another detector (yunet, "
            "with its file in models/standin, finds smaller and turned faces).")
    if ref.faces > 1:
        warnings.append(f"The reference shows {ref.faces} faces; the largest is the identity.")
    thr = THRESHOLDS.get(emb.kind, 0.5) if threshold is None else float(threshold)
    n = len(frames)
    per_frame, boxes, several, small = [], [], 0, 0
    for i in range(n):
        found = embed_largest_face(to_rgb8(frames[i]), emb, detect, FRAME_MIN_SCORE)
        if found is None:
            per_frame.append(None)
            boxes.append(None)
        else:
            per_frame.append(float(np.clip(np.dot(ref.vector, found.vector), -1.0, 1.0)))
            boxes.append(found.box)
            several += found.faces > 1
            small += max(found.box[2] - found.box[0], found.box[3] - found.box[1]) < SMALL_FACE
        if progress is not None:
            progress(i + 1, n)
    if several:
        warnings.append(f"{several} frame(s) show more than one face; the largest face of each was scored.")
    if small:
        warnings.append(f"{small} frame(s) show the face under {SMALL_FACE} pixels across: their scores are "
                        "unreliable (small faces of different people can score above the threshold).")
    return IdentityScore(embedder=emb.name, detector=det_name, threshold=thr, per_frame=per_frame,
                         boxes=boxes, reference_box=ref.box, warnings=warnings)
