"""Reference face preparation (engine/faces/detect.py) on real photographs shipped inside PyPI packages.

Photos: scikit-image's data (astronaut: a face; camera: a man behind a camera; chelsea: a
cat; rocket, coffee: no face) and matplotlib's sample Grace Hopper portrait. Reference
values marked "mediapipe 0.10.21" were produced by the mediapipe package itself (its
BlazeFace and selfie-segmentation solutions), in a separate environment, because mediapipe
0.10 pins numpy<2 and cannot be installed beside this pack.
"""

import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from conftest import HERE, ROOT, pack_module

face = pack_module("engine.faces.detect")

SIZE = 512


def grace_hopper():
    import matplotlib
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def grey_to_rgb(a):
    return np.repeat(a[:, :, None], 3, axis=2)


# Where the faces are, located by hand on each picture: (x1, y1, x2, y2).
ASTRONAUT_FACE = (165, 60, 285, 190)
GRACE_FACE = (160, 130, 375, 360)
CAMERA_FACE = (175, 110, 275, 215)


def centre_in(box, region):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def to_u8(result):
    return np.rint(result.image * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# The official rule, written here from a reading of the official preprocessor
# (preprocessor/image_input_preprocessor.py, FaceProcessor.process and _pad_to_square),
# independently of engine/faces/detect.py.


def official_rect(bbox, w, h):
    x1, y1, x2, y2 = map(int, bbox)
    if x1 <= 10 and y1 <= 10 and x2 >= w - 10 and y2 >= h - 10:
        return 0, 0, w, h
    cx = (x1 + x2) // 2
    cy = (y1 + y2) // 2
    side = int(max(x2 - x1, y2 - y1) * 1.5)
    half = side // 2
    return max(cx - half, 0), max(cy - half, 0), min(cx + half, w), min(cy + half, h)


def official_pixels(rgb, bbox):
    """The official 512x512 output before background removal, for RGB uint8 input."""
    h, w = rgb.shape[:2]
    left, top, right, bottom = official_rect(bbox, w, h) if bbox is not None else (0, 0, w, h)
    part = rgb[top:bottom, left:right]
    ph, pw = part.shape[:2]
    if ph > pw:
        p = (ph - pw) // 2
        part = cv2.copyMakeBorder(part, 0, 0, p, ph - pw - p, cv2.BORDER_CONSTANT, value=[255, 255, 255])
    elif pw > ph:
        p = (pw - ph) // 2
        part = cv2.copyMakeBorder(part, p, pw - ph - p, 0, 0, cv2.BORDER_CONSTANT, value=[255, 255, 255])
    return cv2.resize(part, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def geometry_boxes(w, h, rng):
    boxes = [
        (0, 0, w, h), (10, 10, w - 10, h - 10), (10.9, 10.9, w - 10, h - 10),   # touch all borders
        (11, 10, w - 10, h - 10), (10, 10, w - 11, h - 10), (-5.5, -3.2, w + 4.7, h + 9.9),
        (0, 0, w, h - 11),                                                      # three borders only
        (0, 0, w / 3, h / 3), (w - w / 4, h - h / 4, w, h),                     # corners
        (-20.7, h / 2, 30.2, h / 2 + 40), (w - 3, 0, w + 50, 12.5),             # beyond the edges
        (w / 2, h / 2, w / 2 + 1, h / 2 + 1), (w / 2, h / 2, w / 2 + 1.9, h / 2 + 2.9),  # tiny
        (3, 3, 4, 5), (w / 2 - 0.5, h / 2 - 0.5, w / 2 + 0.5, h / 2 + 0.5),
        (w * 0.1, h * 0.05, w * 0.9, h * 0.98),                                  # huge, not at borders
        (w / 2 - 50.5, 2, w / 2 + 50.5, 200.7),                                 # odd side length
    ]
    for _ in range(300):
        x1, x2 = sorted(rng.uniform(-0.2 * w, 1.2 * w, 2))
        y1, y2 = sorted(rng.uniform(-0.2 * h, 1.2 * h, 2))
        if x2 - x1 >= 1 and y2 - y1 >= 1:
            boxes.append((x1, y1, x2, y2))
    return boxes


@pytest.mark.parametrize("w,h", [(512, 512), (512, 600), (640, 427), (31, 19), (1297, 1297), (480, 832)])
def test_crop_rectangle_equals_official_rule(w, h):
    rng = np.random.default_rng(w * 10007 + h)
    boxes = geometry_boxes(w, h, rng)
    for box in boxes:
        expected = official_rect(box, w, h)
        got, whole = face.official_crop(box, w, h)
        assert got == expected, (box, w, h)
        x1, y1, x2, y2 = map(int, box)
        assert whole == (x1 <= 10 and y1 <= 10 and x2 >= w - 10 and y2 >= h - 10)


def test_border_rule_edges():
    w, h = 600, 400
    assert face.official_crop((10, 10, 590, 390), w, h) == ((0, 0, 600, 400), True)
    assert face.official_crop((10.99, 10.99, 590, 390), w, h) == ((0, 0, 600, 400), True)  # int() truncates
    # One pixel further in on any side: the 1.5x square rule applies instead.
    for box in [(11, 10, 590, 390), (10, 11, 590, 390), (10, 10, 589, 390), (10, 10, 590, 389)]:
        rect, whole = face.official_crop(box, w, h)
        assert not whole and rect == official_rect(box, w, h)


@pytest.mark.parametrize("w,h", [(512, 512), (512, 600), (640, 427), (480, 832)])
def test_square_padding_equals_official_split(w, h):
    top, bottom, left, right = face.square_padding(h, w)
    assert h + top + bottom == w + left + right
    if h > w:
        assert (top, bottom, left) == (0, 0, (h - w) // 2)
    else:
        assert (left, right, top) == (0, 0, (w - h) // 2)


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "rocket"])
def test_pixels_equal_official_for_fixed_boxes(name):
    rgb = {"astronaut": skdata.astronaut, "grace_hopper": grace_hopper, "rocket": skdata.rocket}[name]()
    h, w = rgb.shape[:2]
    for box in [(178.6, 80.2, 272.9, 176.4), (0, 0, 100.5, 60), (w - 90, h - 200, w + 10, h), (5, 5, w - 5, h - 5),
                (w / 2 - 150, h / 2 - 40, w / 2 + 150, h / 2 + 40)]:
        result = face.prepare_reference(rgb, face_box=box, white_background=False)
        assert result.detector == "face_box"
        assert result.crop == official_rect(box, w, h)
        np.testing.assert_array_equal(to_u8(result), official_pixels(rgb, box))


# ---------------------------------------------------------------------------------------
# Real photographs


def test_astronaut_face_found_cropped_and_whitened():
    rgb = skdata.astronaut()
    result = face.prepare_reference(rgb)
    assert result.detector == "blazeface"
    assert result.image.shape == (SIZE, SIZE, 3) and result.image.dtype == np.float32
    assert centre_in(result.face_box, ASTRONAUT_FACE)
    x1, y1, x2, y2 = result.crop
    assert result.crop == official_rect(result.face_box, 512, 512)
    # The crop holds the whole detected face.
    fx1, fy1, fx2, fy2 = result.face_box
    assert x1 <= fx1 and y1 <= fy1 and x2 >= fx2 and y2 >= fy2
    assert result.background == "selfie"
    plain = face.prepare_reference(rgb, face_box=result.face_box, white_background=False)
    out, ref = to_u8(result), to_u8(plain)
    np.testing.assert_array_equal(ref, official_pixels(rgb, result.face_box))
    keep = result.mask.astype(bool)
    # Kept pixels are the untouched crop; the rest is pure white.
    np.testing.assert_array_equal(out[keep], ref[keep])
    assert (out[~keep] == 255).all()
    # The subject stays: the middle of the face, and most of the face box.
    fb = face._box_in_output(result.face_box, result.crop, SIZE)
    assert keep[fb[1]:fb[3], fb[0]:fb[2]].mean() > 0.85
    assert keep[SIZE // 2 - 40:SIZE // 2 + 40, SIZE // 2 - 40:SIZE // 2 + 40].all()
    # The wall behind her, left and right of her head, became white (it was not white before).
    for strip in ((slice(170, 380), slice(0, 24)), (slice(230, 440), slice(SIZE - 24, SIZE))):
        assert (out[strip] == 255).all(axis=2).mean() > 0.95
        assert (ref[strip] == 255).all(axis=2).mean() < 0.05
    # A small source crop is reported.
    assert any("before it is scaled" in w for w in result.warnings)


def test_grace_hopper_portrait():
    rgb = grace_hopper()
    assert rgb.shape[:2] == (600, 512)
    result = face.prepare_reference(rgb)
    assert result.detector == "blazeface"
    assert centre_in(result.face_box, GRACE_FACE)
    assert result.image.shape == (SIZE, SIZE, 3)
    assert result.background == "selfie"
    keep = result.mask.astype(bool)
    assert keep[SIZE // 2 - 60:SIZE // 2 + 60, SIZE // 2 - 60:SIZE // 2 + 60].all()
    # The blue studio backdrop at the upper right corner is white now.
    assert (to_u8(result)[:40, -40:] == 255).all(axis=2).mean() > 0.9


def test_greyscale_2d_input_cameraman():
    grey = skdata.camera()
    assert grey.ndim == 2
    result = face.prepare_reference(grey)
    assert result.detector == "blazeface"
    assert centre_in(result.face_box, CAMERA_FACE)
    out = to_u8(result)
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()
    same = face.prepare_reference(grey[:, :, None])
    np.testing.assert_array_equal(same.image, result.image)


@pytest.mark.parametrize("name", ["chelsea", "rocket", "coffee"])
def test_no_face_whole_image_padded_and_kept(name):
    rgb = getattr(skdata, name)()
    h, w = rgb.shape[:2]
    assert w > h  # landscape: white bands above and below
    result = face.prepare_reference(rgb)
    assert result.face_box is None
    assert result.crop == (0, 0, w, h)
    assert any("No face found" in m for m in result.warnings)
    # A cat or an object is the subject: nothing of it is whitened, the padding is white.
    assert result.background == "kept" and result.mask is None
    assert any("background is kept" in m for m in result.warnings)
    out = to_u8(result)
    np.testing.assert_array_equal(out, official_pixels(rgb, None))
    band = (w - h) // 2 * SIZE // w
    assert (out[:band - 1] == 255).all() and (out[SIZE - band + 1:] == 255).all()
    assert (out[band + 1:SIZE - band - 1] != 255).any(axis=2).mean() > 0.5


def test_subject_mask_whitens_everything_else():
    rgb = skdata.chelsea()
    h, w = rgb.shape[:2]
    mask = np.zeros((h, w), np.float32)
    mask[60:260, 120:360] = 1.0  # the cat's head and body, roughly
    result = face.prepare_reference(rgb, subject_mask=mask)
    assert result.background == "subject_mask"
    out, plain = to_u8(result), official_pixels(rgb, None)
    keep = result.mask.astype(bool)
    np.testing.assert_array_equal(out[keep], plain[keep])
    assert (out[~keep] == 255).all()
    expected_keep = face._crop_pad_resize(mask, (0, 0, w, h), 0.0, SIZE) >= 0.5
    np.testing.assert_array_equal(keep, expected_keep)
    assert 0.2 < keep.mean() < 0.5


def test_mask_of_other_size_is_scaled_or_refused():
    rgb = skdata.astronaut()
    half = np.zeros((256, 256), np.float32)
    half[20:240, 40:200] = 1
    result = face.prepare_reference(rgb, subject_mask=half)
    assert any("subject_mask was 256x256" in m for m in result.warnings)
    assert result.background == "subject_mask"
    with pytest.raises(ValueError, match="same image"):
        face.prepare_reference(rgb, subject_mask=np.ones((200, 300), np.float32))
    # ComfyUI MASK rows come as [1, H, W].
    result = face.prepare_reference(rgb, subject_mask=np.ones((1, 512, 512), np.float32))
    assert result.background == "subject_mask" and result.mask.all()


def test_face_box_and_face_mask_replace_detection():
    rgb = skdata.astronaut()
    result = face.prepare_reference(rgb, face_box=(300, 300, 400, 420))
    assert result.detector == "face_box" and result.face_box == (300.0, 300.0, 400.0, 420.0)
    assert result.crop == official_rect((300, 300, 400, 420), 512, 512)
    fm = np.zeros((512, 512), np.float32)
    fm[100:180, 150:260] = 1
    result = face.prepare_reference(rgb, face_mask=fm)
    assert result.detector == "face_mask" and result.face_box == (150, 100, 260, 180)
    assert result.crop == official_rect((150, 100, 260, 180), 512, 512)
    both = face.prepare_reference(rgb, face_mask=fm, face_box=(300, 300, 400, 420))
    assert both.detector == "face_box" and any("face_box is used" in m for m in both.warnings)
    empty = face.prepare_reference(rgb, face_mask=np.zeros((512, 512), np.float32))
    assert empty.detector == "blazeface" and any("face_mask is empty" in m for m in empty.warnings)
    with pytest.raises(ValueError, match="outside"):
        face.prepare_reference(rgb, face_box=(600, 600, 700, 700))
    with pytest.raises(ValueError, match="x1 < x2"):
        face.prepare_reference(rgb, face_box=(100, 100, 50, 200))


def test_several_faces_largest_used_with_warning():
    a = skdata.astronaut()[20:280, 110:340]                      # 230 x 260, face ~95 px
    g = cv2.resize(grace_hopper()[100:400, 130:400], (234, 260))   # face ~170 px
    both = np.concatenate([a, g], axis=1)                         # two real faces side by side
    result = face.prepare_reference(both)
    assert result.detector == "blazeface"
    assert any(m.startswith("2 faces found") and "largest" in m for m in result.warnings)
    k = 260 / 300
    grace_here = (230 + (GRACE_FACE[0] - 130) * k, (GRACE_FACE[1] - 100) * k,
                  230 + (GRACE_FACE[2] - 130) * k, (GRACE_FACE[3] - 100) * k)
    assert centre_in(result.face_box, grace_here)


def test_detector_none_uses_whole_image():
    rgb = grace_hopper()
    result = face.prepare_reference(rgb, detector="none", white_background=False)
    assert result.detector == "none" and result.face_box is None and result.crop == (0, 0, 512, 600)
    assert not any("No face found" in m for m in result.warnings)
    np.testing.assert_array_equal(to_u8(result), official_pixels(rgb, None))


def test_rgba_transparency_is_white_and_is_the_subject():
    rgb = skdata.astronaut()
    yy, xx = np.mgrid[:512, :512]
    disk = (xx - 225) ** 2 + (yy - 128) ** 2 <= 70 ** 2  # her head is kept, the rest cut away
    alpha = np.where(disk, 255, 0).astype(np.uint8)
    rgba = np.concatenate([rgb, alpha[:, :, None]], axis=2)
    result = face.prepare_reference(rgba, face_box=(178, 80, 273, 176))
    assert result.background == "alpha"
    # Transparent pixels count as white background before the crop is scaled.
    composited = np.where(disk[:, :, None], rgb, 255).astype(np.uint8)
    out = to_u8(result)
    keep = result.mask.astype(bool)
    assert 0.3 < keep.mean() < 0.9
    np.testing.assert_array_equal(out[keep], official_pixels(composited, (178, 80, 273, 176))[keep])
    assert (out[~keep] == 255).all()
    # Fully transparent pixels are white even with whitening off.
    off = to_u8(face.prepare_reference(rgba, detector="none", white_background=False))
    assert (off[:40, :40] == 255).all() and (off[-40:, -40:] == 255).all()
    assert (off[128, 225] != 255).any()
    # An all-opaque alpha channel changes nothing.
    full = np.concatenate([rgb, np.full((512, 512, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(face.prepare_reference(full).image, face.prepare_reference(rgb).image)


def test_float_input_equals_uint8_and_output_is_exact_pixels():
    rgb = skdata.astronaut()
    a = face.prepare_reference(rgb)
    b = face.prepare_reference(rgb.astype(np.float32) / 255.0)
    c = face.prepare_reference((rgb.astype(np.float32) / 255.0)[None])  # a ComfyUI batch of one
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.image, c.image)
    # The image is 8-bit pixels exactly: what the preview shows is what gets encoded.
    np.testing.assert_array_equal(a.image * 255.0, np.rint(a.image * 255.0))
    assert a.image.min() >= 0.0 and a.image.max() <= 1.0


def test_bad_inputs_say_what_to_do():
    rgb = skdata.astronaut()
    with pytest.raises(ValueError, match="one at a time"):
        face.prepare_reference(np.stack([rgb, rgb]))
    with pytest.raises(ValueError, match="divide"):
        face.prepare_reference(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="C = 1, 3 or 4"):
        face.prepare_reference(rgb[:, :, :2])
    with pytest.raises(ValueError, match="auto, yunet, blazeface, haar, none"):
        face.prepare_reference(rgb, detector="insightface")
    # 'haar' is offered only where OpenCV can run it (4.x; OpenCV 5 removed the cascades).
    expected = ["auto", "yunet", "blazeface"] + (["haar"] if hasattr(cv2, "CascadeClassifier") else []) + ["none"]
    assert face.detector_choices() == expected


@pytest.mark.parametrize("side", [1, 14, 40])
def test_tiny_images(side):
    small = cv2.resize(skdata.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    result = face.prepare_reference(small)
    assert result.image.shape == (SIZE, SIZE, 3)
    assert any("before it is scaled" in m for m in result.warnings)


def test_large_landscape_image():
    big = cv2.resize(skdata.astronaut(), (3000, 3000), interpolation=cv2.INTER_CUBIC)
    wide = np.concatenate([big, np.full((3000, 1500, 3), 200, np.uint8)], axis=1)  # 4500 x 3000
    result = face.prepare_reference(wide)
    assert result.detector == "blazeface"
    k = 3000 / 512
    assert centre_in(result.face_box, tuple(v * k for v in ASTRONAUT_FACE))
    assert result.crop == official_rect(result.face_box, 4500, 3000)
    assert not any("before it is scaled" in m for m in result.warnings)


def test_small_face_in_a_large_picture_is_found_in_tiles():
    # The astronaut at 300 px inside a 1600x1200 picture: her face is ~56 px, 3.5% of the
    # long side, too small for one BlazeFace look at the whole picture.
    canvas = cv2.resize(grey_to_rgb(skdata.grass()), (1600, 1200), interpolation=cv2.INTER_LINEAR)
    canvas[300:600, 500:800] = cv2.resize(skdata.astronaut(), (300, 300), interpolation=cv2.INTER_AREA)
    assert face._detect_blazeface(canvas) != []
    result = face.prepare_reference(canvas)
    k = 300 / 512
    region = (500 + ASTRONAUT_FACE[0] * k, 300 + ASTRONAUT_FACE[1] * k, 500 + ASTRONAUT_FACE[2] * k,
              300 + ASTRONAUT_FACE[3] * k)
    assert centre_in(result.face_box, region)


# ---------------------------------------------------------------------------------------
# The bundled models against mediapipe itself


MEDIAPIPE_BOXES = {  # mediapipe 0.10.21 FaceDetection(model_selection=0): (x1, y1, x2, y2)
    "astronaut": (177.6, 82.9, 272.9, 178.2),
    "grace_hopper": (171.4, 146.9, 365.8, 341.4),
    "camera": (180.4, 122.1, 265.2, 207.0),
}


@pytest.mark.parametrize("name", sorted(MEDIAPIPE_BOXES))
def test_blazeface_decoding_matches_mediapipe(name):
    rgb = {"astronaut": skdata.astronaut, "grace_hopper": grace_hopper,
           "camera": lambda: grey_to_rgb(skdata.camera())}[name]()
    net = face._read_tflite(face._bundled(face.BLAZEFACE_FILE, face.BLAZEFACE_SHA256))
    found = face._blazeface_pass(net, rgb, 0.5)
    assert len(found) == 1
    assert iou(found[0][:4], MEDIAPIPE_BOXES[name]) > 0.9


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_selfie_segmentation_matches_mediapipe(name):
    rgb = skdata.astronaut() if name == "astronaut" else grey_to_rgb(skdata.camera())
    with Image.open(os.path.join(HERE, "data", f"{name}_selfie_mediapipe_0.10.21.png")) as im:
        ref = np.asarray(im).astype(bool)
    ours = face._segment_person(rgb) >= 0.5
    assert (ours & ref).sum() / (ours | ref).sum() > 0.97


def test_bundled_model_files_are_the_recorded_ones():
    for name, digest in ((face.BLAZEFACE_FILE, face.BLAZEFACE_SHA256), (face.SELFIE_FILE, face.SELFIE_SHA256)):
        with open(os.path.join(face.BUNDLED_DIR, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest


def test_damaged_bundled_model_is_reported(tmp_path, monkeypatch):
    (tmp_path / face.BLAZEFACE_FILE).write_bytes(b"not a model")
    (tmp_path / face.SELFIE_FILE).write_bytes(b"not a model")
    monkeypatch.setattr(face, "BUNDLED_DIR", str(tmp_path))
    rgb = skdata.astronaut()
    with pytest.raises(face.FaceDetectorUnavailable, match="damaged"):
        face.prepare_reference(rgb, detector="blazeface")
    result = face.prepare_reference(rgb)
    if hasattr(cv2, "CascadeClassifier"):
        assert result.detector == "haar" and any("BlazeFace could not run" in m for m in result.warnings)
    else:
        assert result.detector == "none" and any("No face detector can run" in m for m in result.warnings)
    with_box = face.prepare_reference(rgb, face_box=(178, 80, 273, 176))
    assert with_box.background == "kept"
    assert any("segmentation cannot run" in m for m in with_box.warnings)


# ---------------------------------------------------------------------------------------
# Haar (OpenCV 4 only) and YuNet (needs its model file, which these tests do not have)


def test_haar_where_opencv_has_it():
    rgb = skdata.astronaut()
    if hasattr(cv2, "CascadeClassifier"):
        result = face.prepare_reference(rgb, detector="haar")
        assert result.detector == "haar" and centre_in(result.face_box, ASTRONAUT_FACE)
    else:
        with pytest.raises(face.FaceDetectorUnavailable, match="OpenCV 5 removed CascadeClassifier"):
            face.prepare_reference(rgb, detector="haar")


def test_yunet_absent_falls_back_or_says_where_to_put_it(tmp_path):
    rgb = skdata.astronaut()
    result = face.prepare_reference(rgb, model_dirs=[str(tmp_path)])
    assert result.detector == "blazeface" and not any("YuNet" in m for m in result.warnings)
    with pytest.raises(face.FaceDetectorUnavailable) as err:
        face.prepare_reference(rgb, detector="yunet", model_dirs=[str(tmp_path)])
    message = str(err.value)
    assert face.YUNET_FILE in message and face.YUNET_URL in message and str(tmp_path) in message


@pytest.mark.parametrize("content", [b"x" * 1000, b"x" * 232589])
def test_yunet_wrong_file_is_refused(tmp_path, content):
    (tmp_path / face.YUNET_FILE).write_bytes(content)
    rgb = skdata.astronaut()
    result = face.prepare_reference(rgb, model_dirs=[str(tmp_path)])
    assert result.detector == "blazeface"
    assert any("is not the YuNet model" in m and "download" in m for m in result.warnings)
    with pytest.raises(face.FaceDetectorUnavailable, match="delete it"):
        face.prepare_reference(rgb, detector="yunet", model_dirs=[str(tmp_path)])


def test_yunet_plumbing_with_a_stub_detector(tmp_path, monkeypatch):
    """Not a detection test: checks that a verified file is preferred by 'auto', and how
    FaceDetectorYN's rows (x, y, w, h, 10 landmark values, score) become boxes for a
    picture that is scaled down before detection. The real network is not run."""
    model = tmp_path / face.YUNET_FILE
    model.write_bytes(b"stand-in for the real file")
    monkeypatch.setattr(face, "YUNET_SIZE", model.stat().st_size)
    monkeypatch.setattr(face, "YUNET_SHA256", hashlib.sha256(model.read_bytes()).hexdigest())
    calls = {}

    class Stub:
        @staticmethod
        def create(path, config, size, score, nms, top_k):
            calls.update(path=path, size=size)
            return Stub()

        def detect(self, bgr):
            calls["shape"] = bgr.shape
            row = np.zeros(15, np.float32)
            row[:4] = (100, 50, 80, 100)  # x, y, w, h in the scaled picture
            row[14] = 0.95
            return 1, row[None]

    monkeypatch.setattr(cv2, "FaceDetectorYN", Stub, raising=False)
    rgb = cv2.resize(skdata.astronaut(), (1280, 960))
    result = face.prepare_reference(rgb, model_dirs=[str(tmp_path / "missing"), str(tmp_path)],
                                    white_background=False)
    assert result.detector == "yunet" and calls["path"] == str(model)
    assert calls["size"] == (640, 480) and calls["shape"][:2] == (480, 640)
    np.testing.assert_allclose(result.face_box, (200, 100, 360, 300))


def test_yunet_manifest_entry():
    entry = face.yunet_manifest_entry()
    assert entry["name"] == "face_detection_yunet_2023mar.onnx"
    assert entry["size"] == 232589
    assert entry["sha256"] == "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    assert entry["url"] == ("https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
                            "face_detection_yunet_2023mar.onnx")
    assert entry["folder"] == "standin"


# ---------------------------------------------------------------------------------------
# The command line tool writes what the module returns


def test_prepare_reference_cli(tmp_path):
    src = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(src)
    out = tmp_path / "out.png"
    run = subprocess.run([sys.executable, os.path.join(HERE, "prepare_reference.py"), str(src), str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "detector: blazeface" in run.stderr
    with Image.open(out) as im:
        written = np.asarray(im)
    np.testing.assert_array_equal(written, to_u8(face.prepare_reference(skdata.astronaut())))

    mask = np.zeros((512, 512), np.uint8)
    mask[40:500, 60:330] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    run = subprocess.run([sys.executable, os.path.join(HERE, "prepare_reference.py"), str(src), str(out),
                          "--mask", str(tmp_path / "mask.png")], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "background: subject_mask" in run.stderr
    with Image.open(out) as im:
        written = np.asarray(im)
    np.testing.assert_array_equal(
        written, to_u8(face.prepare_reference(skdata.astronaut(), subject_mask=mask.astype(np.float32) / 255)))
