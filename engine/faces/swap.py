"""Video face swap preparation, the way the official Stand-In pipeline does it, without insightface.

The official ``preprocessor/videomask_generator.py`` (WeChatCV/Stand-In) prepares a source video
for face swap; this module reproduces its geometry with the detector bundled in this pack:

1. the video is centre-cropped to multiples of 16 and trimmed to 4n+1 frames;
2. in every frame the largest face is found (BlazeFace, score > 0.5);
3. with landmarks, a similarity transform fitted on them (``cv2.estimateAffinePartial2D``,
   LMEDS) carries the prepared 512x512 reference and its alpha (the person) onto the face,
   which is alpha-pasted; the frame's mask is the warped alpha;
4. without landmarks (or with alignment off), the reference is resized into a square of 1.5x
   the face box and pasted through a face mask dilated (10 px) and feathered (21 px) at the
   scale of a 512 crop, as officially; the official mask comes from a face-parsing network,
   here from a MASK the user connects or else an ellipse inscribed in the face box;
5. a frame without a face is left unchanged, with an empty mask and a warning.

BlazeFace gives 6 keypoints (eyes, nose tip, mouth, ear tragions) where insightface gives 5
(eyes, nose, mouth corners); the fit is a similarity either way and LMEDS discards an outlier.
Frames are processed one at a time into preallocated outputs, so memory stays at the input,
the output and one frame's work. Pure numpy / OpenCV: it imports without ComfyUI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import detect as face

log = logging.getLogger(__name__)

# The official VideoMaskGenerator.process defaults.
CONFIDENCE = 0.5
FACE_CROP_SCALE = 1.5
DILATION = 10
FEATHER = 21
PARSE_SIZE = 512  # the official face mask is made, dilated and feathered on a 512x512 crop

KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


# ----------------------------------------------------------------------------------------
# Video geometry


@dataclass(frozen=True)
class VideoGeometry:
    x0: int
    y0: int
    width: int
    height: int
    length: int


def video_geometry(frames: int, height: int, width: int) -> VideoGeometry:
    """Centre crop to multiples of 16 and trim to 4n+1 frames, as officially.

    The official code keeps ``(n // 4) * 4 + 1`` frames, which is one more than a video of 4n
    frames holds (it then keeps 4n, which Wan's VAE cannot take); this keeps the largest
    4n+1 that exists.
    """
    if frames < 1:
        raise ValueError("The video has no frames: connect the IMAGE output of Load Video / Get Video Components.")
    if height < 16 or width < 16:
        raise ValueError(f"The video is {width}x{height}; Wan needs at least 16x16 pixels.")
    new_h, new_w = (height // 16) * 16, (width // 16) * 16
    return VideoGeometry(x0=(width - new_w) // 2, y0=(height - new_h) // 2, width=new_w, height=new_h,
                         length=((frames - 1) // 4) * 4 + 1)


def crop_frames(frames, geometry: VideoGeometry):
    """The frames the official pipeline keeps (a view of an array or tensor, no copy)."""
    g = geometry
    return frames[:g.length, g.y0:g.y0 + g.height, g.x0:g.x0 + g.width]


# ----------------------------------------------------------------------------------------
# Faces with landmarks (BlazeFace's 6 keypoints)


@dataclass
class Face:
    box: tuple             # (x1, y1, x2, y2) in frame pixels
    score: float
    keypoints: np.ndarray  # float32 [6, 2], KEYPOINTS order


def load_detector():
    """The bundled BlazeFace network, read once per video."""
    return face._read_tflite(face._bundled(face.BLAZEFACE_FILE, face.BLAZEFACE_SHA256))


def _pass(net, rgb: np.ndarray, min_score: float, x0: int = 0, y0: int = 0) -> list:
    """One BlazeFace run (letterboxed into 128x128, as face._blazeface_pass), boxes and keypoints."""
    scores_raw, regs, (s, ox, oy) = face.blazeface_run(net, rgb)
    scores = 1.0 / (1.0 + np.exp(-np.clip(scores_raw.astype(np.float64), -100.0, 100.0)))
    keep = scores >= min_score
    if not keep.any():
        return []
    anchors = face._blazeface_anchors()[keep]
    r = regs[keep].astype(np.float64) / 128.0
    cx, cy = r[:, 0] + anchors[:, 0], r[:, 1] + anchors[:, 1]
    boxes = np.stack([cx - r[:, 2] / 2, cy - r[:, 3] / 2, cx + r[:, 2] / 2, cy + r[:, 3] / 2], axis=1)
    kps = r[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    rows = np.concatenate([boxes, kps.reshape(-1, 12)], axis=1) * 128.0
    rows[:, 0::2] = (rows[:, 0::2] - ox) / s + x0
    rows[:, 1::2] = (rows[:, 1::2] - oy) / s + y0
    # face._weighted_nms takes IoU on the first four columns and averages every column.
    return face._weighted_nms(rows, scores[keep], 0.3)


def _to_face(row) -> Face:
    return Face(box=tuple(float(v) for v in row[:4]), score=float(row[16]),
                keypoints=np.asarray(row[4:16], np.float32).reshape(6, 2))


def detect_faces(net, rgb: np.ndarray, min_score: float = CONFIDENCE) -> list[Face]:
    """Faces in an RGB uint8 frame, largest first, each with a box refined by a closer look.

    Like face._detect_blazeface: the whole frame first; when that finds nothing, overlapping
    tiles of a half and a quarter of the frame at a stricter score; a face small in the
    128-pixel view is looked at again in a zoomed square, which sharpens box and keypoints.
    """
    h, w = rgb.shape[:2]
    longest = max(h, w)
    found = _pass(net, rgb, min_score)
    confirm = min_score
    if not found:
        confirm = max(min_score, face.TILE_MIN_SCORE)
        for side in (longest // 2, longest // 4):
            if side < 96:
                break
            step = side // 2
            for ty in face._tile_starts(h, side, step):
                for tx in face._tile_starts(w, side, step):
                    found += _pass(net, rgb[ty:ty + side, tx:tx + side], min_score, tx, ty)
            if found:
                arr = np.asarray(found, np.float64)
                found = face._weighted_nms(arr[:, :16], arr[:, 16], 0.3)
                break
    faces = []
    for row in sorted(found, key=lambda f: -(f[2] - f[0]) * (f[3] - f[1]))[:5]:
        x1, y1, x2, y2 = row[:4]
        side = max(x2 - x1, y2 - y1)
        if side >= longest / 3:
            if row[16] >= confirm:
                faces.append(_to_face(row))
            continue
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 1.25 * side
        zx1, zy1 = max(0, int(cx - half)), max(0, int(cy - half))
        zx2, zy2 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
        closer = [f for f in _pass(net, rgb[zy1:zy2, zx1:zx2], confirm, zx1, zy1)
                  if x1 <= (f[0] + f[2]) / 2 <= x2 and y1 <= (f[1] + f[3]) / 2 <= y2]
        if closer:
            faces.append(_to_face(max(closer, key=lambda f: f[16])))
    faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return faces


# ----------------------------------------------------------------------------------------
# The reference to paste


@dataclass
class SwapReference:
    image: np.ndarray            # float32 [S, S, 3] in [0, 1]: the prepared reference (what was encoded)
    alpha: np.ndarray            # float32 [S, S] in [0, 1]: the person (the official RGBA's alpha)
    keypoints: np.ndarray | None  # float32 [6, 2], or None when no face was found in it
    warnings: list = field(default_factory=list)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def swap_reference(image: np.ndarray, alpha: np.ndarray | None, net=None) -> SwapReference:
    """The prepared reference (image [S, S, 3] in [0, 1]) with its person alpha and landmarks."""
    image = np.asarray(image, np.float32)
    if image.ndim == 4:
        image = image[0]
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"the reference must be one RGB image, got shape {image.shape}.")
    image = np.ascontiguousarray(image[:, :, :3])
    warnings = []
    if alpha is None:
        alpha = np.ones(image.shape[:2], np.float32)
        warnings.append("The identity has no person mask (Encode Reference Face kept the background), so "
                        "the whole reference square is pasted. Turn white_background on in Encode Reference "
                        "Face, or connect a subject_mask there.")
    else:
        alpha = np.asarray(alpha, np.float32)
        while alpha.ndim > 2:
            alpha = alpha[0]
        if alpha.shape != image.shape[:2]:
            alpha = cv2.resize(alpha, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        alpha = np.clip(alpha, 0.0, 1.0)
    net = net if net is not None else load_detector()
    faces = detect_faces(net, to_uint8(image))
    keypoints = faces[0].keypoints if faces else None
    if keypoints is None:
        warnings.append("No face landmarks were found in the reference, so faces are pasted into their "
                        "boxes without matching angle and size.")
    return SwapReference(image=image, alpha=np.ascontiguousarray(alpha), keypoints=keypoints, warnings=warnings)


# ----------------------------------------------------------------------------------------
# One frame


@dataclass
class FrameInfo:
    face_box: tuple | None   # (x1, y1, x2, y2) of the face swapped, None when none
    aligned: bool = False    # pasted with the landmark transform
    transform: np.ndarray | None = None  # 2x3 reference -> frame transform when aligned
    warning: str | None = None


def _mask_box(mask: np.ndarray | None):
    if mask is None:
        return None
    ys, xs = np.nonzero(mask >= 0.5)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _soft_mask(mask512: np.ndarray, dilation: int, feather: int) -> np.ndarray:
    """Dilate (elliptical kernel) and feather (Gaussian) a uint8 mask, as the official code does."""
    if dilation > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (dilation, dilation))
        mask512 = cv2.dilate(mask512, kernel, iterations=1)
    if feather > 0:
        k = feather if feather % 2 else feather + 1
        mask512 = cv2.GaussianBlur(mask512, (k, k), 0)
    return mask512


class FaceSwapper:
    """Pastes one reference onto frames (float32 HxWx3 in [0, 1]); holds no per-video state
    besides the detector and the reference."""

    def __init__(self, reference: SwapReference, align: bool = True, dilation: int = DILATION,
                 feather: int = FEATHER, confidence: float = CONFIDENCE, net=None):
        self.ref = reference
        self.align = bool(align) and reference.keypoints is not None
        self.dilation, self.feather = int(dilation), int(feather)
        self.confidence = float(confidence)
        self.net = net if net is not None else load_detector()
        self.ref_rgba8 = np.dstack([to_uint8(reference.image), to_uint8(reference.alpha)])

    def _pick(self, faces: list[Face], hint_box):
        if hint_box is None:
            return faces[0] if faces else None
        hx1, hy1, hx2, hy2 = hint_box
        inside = [f for f in faces if hx1 <= (f.box[0] + f.box[2]) / 2 <= hx2
                  and hy1 <= (f.box[1] + f.box[3]) / 2 <= hy2]
        return inside[0] if inside else None

    def swap(self, frame: np.ndarray, out: np.ndarray, out_mask: np.ndarray, face_mask: np.ndarray | None = None) -> FrameInfo:
        """Writes the pasted frame into ``out`` and its mask into ``out_mask`` (both preallocated,
        may be views); ``face_mask`` (HxW, 1 = the face to replace) selects the face and stands in
        for the official face-parsing mask. Returns what was done."""
        out[...] = frame
        out_mask[...] = 0.0
        hint = None
        if face_mask is not None:
            hint = _mask_box(face_mask)
            if hint is None:
                return FrameInfo(None, warning="the face MASK is empty in this frame; it is left unchanged")
        faces = detect_faces(self.net, to_uint8(frame), self.confidence)
        chosen = self._pick(faces, hint)
        if chosen is None and hint is None:
            return FrameInfo(None, warning="no face found; the frame is left unchanged")
        if chosen is not None and self.align:
            matrix, _ = cv2.estimateAffinePartial2D(self.ref.keypoints, chosen.keypoints, method=cv2.LMEDS)
            if matrix is not None and np.isfinite(matrix).all():
                self._paste_aligned(frame, out, out_mask, matrix)
                return FrameInfo(chosen.box, aligned=True, transform=matrix)
        box = chosen.box if chosen is not None else hint
        self._paste_box(frame, out, out_mask, box, face_mask)
        return FrameInfo(tuple(box), aligned=False)

    def _paste_aligned(self, frame, out, out_mask, matrix):
        h, w = frame.shape[:2]
        # Warp only the frame's part the reference lands on.
        s = self.ref.image.shape[0]
        corners = cv2.transform(np.array([[[0, 0], [s, 0], [0, s], [s, s]]], np.float32), matrix)[0]
        x1, y1 = np.floor(corners.min(0)).astype(int) - 1
        x2, y2 = np.ceil(corners.max(0)).astype(int) + 1
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 <= x1 or y2 <= y1:
            return
        shifted = matrix.astype(np.float64).copy()
        shifted[:, 2] -= (x1, y1)
        size = (x2 - x1, y2 - y1)
        # As officially: 8-bit RGBA warped bilinearly with a black, transparent border.
        warped = cv2.warpAffine(self.ref_rgba8, shifted, size, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32) / 255.0
        alpha = warped[:, :, 3]
        region = frame[y1:y2, x1:x2]
        a = alpha[:, :, None]
        out[y1:y2, x1:x2] = np.where(a > 0, region + a * (warped[:, :, :3] - region), region)
        out_mask[y1:y2, x1:x2] = alpha

    def _paste_box(self, frame, out, out_mask, box, face_mask):
        h, w = frame.shape[:2]
        x1, y1, x2, y2 = (int(v) for v in box)
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        half = int(max(x2 - x1, y2 - y1) * FACE_CROP_SCALE) // 2
        cx1, cy1 = max(cx - half, 0), max(cy - half, 0)
        cx2, cy2 = min(cx + half, w), min(cy + half, h)
        bw, bh = cx2 - cx1, cy2 - cy1
        if bw <= 0 or bh <= 0:
            return
        # The face mask on a 512x512 view of the crop (the official parsing size).
        if face_mask is not None:
            crop_mask = np.asarray(face_mask[cy1:cy2, cx1:cx2], np.float32)
            m512 = cv2.resize(to_uint8(crop_mask), (PARSE_SIZE, PARSE_SIZE), interpolation=cv2.INTER_AREA)
            m512 = np.where(m512 >= 128, np.uint8(255), np.uint8(0))
        else:
            m512 = np.zeros((PARSE_SIZE, PARSE_SIZE), np.uint8)
            kx, ky = PARSE_SIZE / bw, PARSE_SIZE / bh
            centre = (int(round(((x1 + x2) / 2 - cx1) * kx)), int(round(((y1 + y2) / 2 - cy1) * ky)))
            axes = (max(1, int(round((x2 - x1) / 2 * kx))), max(1, int(round((y2 - y1) / 2 * ky))))
            cv2.ellipse(m512, centre, axes, 0, 0, 360, 255, -1)
        m512 = _soft_mask(m512, self.dilation, self.feather)
        mask = cv2.resize(m512, (bw, bh), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        # The reference resized into the crop (the official Lanczos), pasted through the mask only.
        ref = cv2.resize(to_uint8(self.ref.image), (bw, bh), interpolation=cv2.INTER_LANCZOS4).astype(np.float32) / 255.0
        region = frame[cy1:cy2, cx1:cx2]
        m = mask[:, :, None]
        out[cy1:cy2, cx1:cx2] = np.where(m > 0, region + m * (ref - region), region)
        out_mask[cy1:cy2, cx1:cx2] = mask


# ----------------------------------------------------------------------------------------
# A whole video


@dataclass
class SwapResult:
    geometry: VideoGeometry
    frames: np.ndarray          # float32 [length, height, width, 3]
    masks: np.ndarray           # float32 [length, height, width], 1 = swapped
    infos: list                 # FrameInfo per frame
    warnings: list


def swap_video(frames, reference: SwapReference, face_masks=None, align: bool = True,
               dilation: int = DILATION, feather: int = FEATHER, confidence: float = CONFIDENCE,
               out_frames: np.ndarray | None = None, out_masks: np.ndarray | None = None,
               progress=None) -> SwapResult:
    """Crop/trim ``frames`` ([N, H, W, 3] float in [0, 1], array-like indexable per frame) and
    paste the reference onto every kept frame. ``face_masks``: optional [N or 1, H, W] masks
    (1 = the face to replace) of the uncropped frames. ``out_frames`` / ``out_masks``:
    preallocated outputs ([L, h, w, 3] / [L, h, w] float32) to fill, e.g. views of tensors.
    ``progress(i)`` is called after each frame."""
    n, h, w = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    g = video_geometry(n, h, w)
    if face_masks is not None:
        mn = int(face_masks.shape[0])
        if tuple(face_masks.shape[1:3]) != (h, w):
            raise ValueError(f"The face MASK is {face_masks.shape[2]}x{face_masks.shape[1]} but the frames are "
                             f"{w}x{h}: connect masks made from these frames.")
        if mn not in (1, n) and mn < g.length:
            raise ValueError(f"The face MASK has {mn} frames but the video has {n}: connect one mask per "
                             f"frame (or a single mask for all frames).")
    if out_frames is None:
        out_frames = np.empty((g.length, g.height, g.width, 3), np.float32)
    if out_masks is None:
        out_masks = np.empty((g.length, g.height, g.width), np.float32)
    net = load_detector()
    swapper = FaceSwapper(reference, align=align, dilation=dilation, feather=feather, confidence=confidence, net=net)
    warnings = list(reference.warnings)
    infos, skipped = [], []
    for i in range(g.length):
        frame = np.asarray(frames[i][g.y0:g.y0 + g.height, g.x0:g.x0 + g.width], np.float32)
        fm = None
        if face_masks is not None:
            src = face_masks[0 if int(face_masks.shape[0]) == 1 else i]
            fm = np.asarray(src[g.y0:g.y0 + g.height, g.x0:g.x0 + g.width], np.float32)
        info = swapper.swap(frame, out_frames[i], out_masks[i], fm)
        infos.append(info)
        if info.face_box is None:
            skipped.append(i)
        if progress is not None:
            progress(i)
    if skipped:
        warnings.append(f"No face to swap in {len(skipped)} of {g.length} frames ({_frame_list(skipped)}); "
                        "they are left unchanged with an empty mask. Connect a face MASK for them if they "
                        "have a face.")
    if (g.width, g.height, g.length) != (w, h, n):
        warnings.append(f"The video was {w}x{h}, {n} frames; it was centre-cropped to {g.width}x{g.height} and "
                        f"trimmed to {g.length} frames (Wan needs multiples of 16 and 4n+1 frames).")
    for message in warnings:
        log.warning("Stand-In face swap: %s", message)
    return SwapResult(geometry=g, frames=out_frames, masks=out_masks, infos=infos, warnings=warnings)


def _frame_list(indices: list) -> str:
    shown = ", ".join(str(i) for i in indices[:12])
    return f"frames {shown}" + (", ..." if len(indices) > 12 else "")


# ----------------------------------------------------------------------------------------
# After sampling: background restore with a LAB colour match (the official preprocessor node)


def color_match_lab(generated8: np.ndarray, source8: np.ndarray, region: np.ndarray, strength: float) -> np.ndarray:
    """Move the generated crop's LAB mean/std inside ``region`` (uint8 0/1) to the source's, and
    mix the corrected crop with the original by ``strength``, as VideoBackgroundRestorer does."""
    if strength <= 0 or not region.any():
        return generated8
    src = cv2.cvtColor(source8, cv2.COLOR_RGB2LAB)
    gen = cv2.cvtColor(generated8, cv2.COLOR_RGB2LAB)
    s_mean, s_std = cv2.meanStdDev(src, mask=region)
    g_mean, g_std = cv2.meanStdDev(gen, mask=region)
    lab = gen.astype(np.float64)
    for c in range(3):
        lab[:, :, c] = (lab[:, :, c] - g_mean[c, 0]) * (s_std[c, 0] / (g_std[c, 0] + 1e-6)) + s_mean[c, 0]
    corrected = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return cv2.addWeighted(corrected, float(strength), generated8, 1.0 - float(strength), 0)


def restore_frame(generated: np.ndarray, source: np.ndarray, mask: np.ndarray, out: np.ndarray,
                  dilation: int = 25, feather: int = 51, color_match: float = 0.75) -> None:
    """Composite the generated frame onto the source frame through the mask (dilated, feathered,
    in frame pixels), after matching the generated face's colours to the source's. Writes ``out``."""
    hard = (mask > 0.5).astype(np.uint8)
    if not hard.any():
        out[...] = source
        return
    soft = _soft_mask(hard * np.uint8(255), int(dilation), int(feather)).astype(np.float32) / 255.0
    ys, xs = np.nonzero(soft > 0)
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    gen = generated[y1:y2, x1:x2]
    if color_match > 0:
        gen8 = color_match_lab(to_uint8(gen), to_uint8(source[y1:y2, x1:x2]), hard[y1:y2, x1:x2], color_match)
        gen = gen8.astype(np.float32) / 255.0
    out[...] = source
    m = soft[y1:y2, x1:x2, None]
    out[y1:y2, x1:x2] = source[y1:y2, x1:x2] + m * (gen - source[y1:y2, x1:x2])
