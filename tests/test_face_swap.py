"""Face swap preparation on videos made from a real photograph with a known motion per frame
(tests/face_swap_video.py): geometry, masks against the true face, untouched pixels, frames
without a face, the no-landmark paste, per-frame masks from another node, background restore,
the nodes and tests/prepare_face_swap.py."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import conftest
import face_swap_video as V

HERE = os.path.dirname(os.path.abspath(__file__))
W, H, N, NO_FACE = 250, 170, 14, (6,)


@pytest.fixture(scope="module")
def fs():
    return conftest.pack_module("engine.faces.swap")


@pytest.fixture(scope="module")
def reference(fs):
    face = conftest.pack_module("engine.faces.detect")
    prepared = face.prepare_reference(V.astronaut())
    assert prepared.mask is not None, "the selfie segmentation must give the person's alpha"
    return prepared, fs.swap_reference(prepared.image, prepared.mask)


@pytest.fixture(scope="module")
def video():
    frames, transforms = V.make_video(N, W, H, no_face=NO_FACE)
    return frames.astype(np.float32) / 255.0, transforms


@pytest.fixture(scope="module")
def aligned(fs, reference, video):
    return fs.swap_video(video[0], reference[1])


def cropped_transform(m, g):
    m = m.copy()
    m[:, 2] -= (g.x0, g.y0)
    return m


@pytest.mark.parametrize("n, h, w, expect", [
    (81, 480, 832, (0, 0, 832, 480, 81)),
    (83, 490, 850, (1, 5, 848, 480, 81)),
    (80, 480, 832, (0, 0, 832, 480, 77)),   # officially 80 (not 4n+1); here the largest 4n+1
    (1, 17, 31, (7, 0, 16, 16, 1)),
    (4, 64, 64, (0, 0, 64, 64, 1)),
])
def test_video_is_cropped_to_16_and_trimmed_to_4n_plus_1(fs, n, h, w, expect):
    g = fs.video_geometry(n, h, w)
    assert (g.x0, g.y0, g.width, g.height, g.length) == expect
    assert g.width % 16 == 0 and g.height % 16 == 0 and (g.length - 1) % 4 == 0


def test_too_small_or_empty_video_is_refused(fs):
    with pytest.raises(ValueError, match="at least 16x16"):
        fs.video_geometry(5, 15, 64)
    with pytest.raises(ValueError, match="no frames"):
        fs.video_geometry(0, 64, 64)


def test_reference_has_landmarks_and_alpha(reference):
    prepared, ref = reference
    assert ref.keypoints is not None and ref.keypoints.shape == (6, 2)
    eyes = ref.keypoints[:2]
    assert eyes[0, 0] < eyes[1, 0] and abs(eyes[0, 1] - eyes[1, 1]) < 20  # upright face, eyes level
    assert 0.3 < ref.alpha.mean() < 0.95


def test_mask_covers_the_true_face_and_matches_the_true_alignment(fs, reference, video, aligned):
    prepared, _ = reference
    g = aligned.geometry
    to_photo = V.reference_to_photo(prepared)
    coverage, ious, box_cover = [], [], []
    for i, (info, m) in enumerate(zip(aligned.infos, video[1][:g.length])):
        if m is None:
            continue
        assert info.aligned, f"frame {i} was not aligned on landmarks"
        m = cropped_transform(m, g)
        mask = aligned.masks[i] > 0.5
        face = V.face_region(m, g.height, g.width)
        assert face.sum() > 300
        coverage.append(float(mask[face].mean()))
        box_cover.append(float(mask[V.quad_mask(V.face_quad(m), g.height, g.width)].mean()))
        ideal = cv2.warpAffine(prepared.mask, V.compose(m, to_photo), (g.width, g.height)) > 0.5
        ious.append(V.iou(mask, ideal))
    print(f"aligned: face covered min {min(coverage):.3f} mean {np.mean(coverage):.3f}; face box covered min "
          f"{min(box_cover):.3f}; IoU with the true warped alpha min {min(ious):.3f} mean {np.mean(ious):.3f} "
          f"over {len(ious)} frames")
    assert len(ious) == g.length - len(NO_FACE)
    assert min(coverage) >= 0.95
    assert min(ious) >= 0.8 and np.mean(ious) >= 0.88


def test_pixels_outside_the_mask_are_unchanged(video, aligned):
    g = aligned.geometry
    source = fs_crop(video[0], g)
    for i in range(g.length):
        outside = aligned.masks[i] == 0
        assert np.array_equal(aligned.frames[i][outside], source[i][outside]), i
        if aligned.infos[i].face_box is not None:
            assert outside.mean() < 0.99 and (aligned.frames[i] != source[i]).any()


def fs_crop(frames, g):
    return frames[:g.length, g.y0:g.y0 + g.height, g.x0:g.x0 + g.width]


def test_frames_without_a_face_are_unchanged_with_an_empty_mask_and_a_warning(video, aligned):
    g = aligned.geometry
    source = fs_crop(video[0], g)
    for i in NO_FACE:
        assert aligned.infos[i].face_box is None
        assert not aligned.masks[i].any()
        assert np.array_equal(aligned.frames[i], source[i])
    assert any("No face to swap in 1 of 13 frames (frames 6)" in w for w in aligned.warnings), aligned.warnings
    assert any("centre-cropped to 240x160 and trimmed to 13 frames" in w for w in aligned.warnings)
    assert (g.width, g.height, g.length) == (240, 160, 13)


def test_without_alignment_the_reference_goes_into_the_face_box(fs, reference, video):
    result = fs.swap_video(video[0][:5], reference[1], align=False)
    g = result.geometry
    source = fs_crop(video[0], g)
    coverage = []
    for i in range(g.length):
        info = result.infos[i]
        assert info.face_box is not None and not info.aligned
        m = cropped_transform(video[1][i], g)
        mask = result.masks[i]
        coverage.append(float((mask[V.face_region(m, g.height, g.width)] > 0.5).mean()))
        # The mask lives in the official 1.5x square around the detected box.
        x1, y1, x2, y2 = info.face_box
        side = max(x2 - x1, y2 - y1) * 1.5
        ys, xs = np.nonzero(mask)
        assert xs.min() >= (x1 + x2) / 2 - side / 2 - 1 and xs.max() <= (x1 + x2) / 2 + side / 2 + 1
        outside = mask == 0
        assert np.array_equal(result.frames[i][outside], source[i][outside])
        assert 0 < mask.max() <= 1 and ((mask > 0) & (mask < 1)).any()  # feathered
    # An upright ellipse in an upright box: a face turned by up to 20 degrees pokes out a little.
    print(f"box paste: face covered min {min(coverage):.3f} mean {np.mean(coverage):.3f}")
    assert min(coverage) >= 0.9


def test_a_face_mask_chooses_the_face_and_an_empty_one_skips_the_frame(fs, reference, video):
    frames = video[0][:5]
    masks = np.zeros(frames.shape[:3], np.float32)
    for i in (0, 1, 3, 4):
        masks[i] = V.face_region(video[1][i], H, W)
    result = fs.swap_video(frames, reference[1], face_masks=masks, align=False)
    g = result.geometry
    assert result.infos[2].face_box is None and not result.masks[2].any()
    assert np.array_equal(result.frames[2], fs_crop(frames, g)[2])
    for i in (0, 1, 3, 4):
        given = fs_crop(masks, g)[i] > 0.5
        assert (result.masks[i][given] > 0.5).mean() >= 0.99
    with pytest.raises(ValueError, match="face MASK is 10x10"):
        fs.swap_video(frames, reference[1], face_masks=np.zeros((5, 10, 10), np.float32))


def test_restore_background_keeps_the_source_outside_and_matches_colours(fs, video, aligned):
    g = aligned.geometry
    source = np.ascontiguousarray(fs_crop(video[0], g)[3])
    mask = aligned.masks[3]
    generated = np.clip(aligned.frames[3] * 0.6 + 0.3, 0, 1).astype(np.float32)  # washed-out "generation"
    out = np.empty_like(source)
    fs.restore_frame(generated, source, mask, out, dilation=25, feather=51, color_match=0.75)
    hard = (mask > 0.5).astype(np.uint8) * 255
    grown = fs._soft_mask(hard, 25, 51) > 0
    assert np.array_equal(out[~grown], source[~grown])
    core = cv2.erode(hard, np.ones((9, 9), np.uint8)) > 0
    assert core.any()
    plain = np.empty_like(source)
    fs.restore_frame(generated, source, mask, plain, dilation=25, feather=51, color_match=0.0)
    # Colour matching moves the washed-out face's contrast back towards the source's.
    assert abs(out[core].std() - source[core].std()) < abs(plain[core].std() - source[core].std())
    empty = np.empty_like(source)
    fs.restore_frame(generated, source, np.zeros_like(mask), empty)
    assert np.array_equal(empty, source)


# ------------------------------------------------------------------------------------
# Nodes


@pytest.fixture(scope="module")
def identity(reference):
    objects = conftest.pack_module("nodes.sockets")
    prepared, _ = reference
    return objects.Identity(latent=torch.zeros(1, 16, 1, 64, 64), image=torch.from_numpy(prepared.image)[None],
                            vae_kind="test", latent_channels=16, alpha=torch.from_numpy(prepared.mask))


def test_prepare_node_outputs_and_restore_node(identity, video):
    prep = conftest.pack_module("nodes.prepare_face_swap").PrepareFaceSwapVideo
    restore = conftest.pack_module("nodes.restore_background").RestoreBackground
    images = torch.from_numpy(video[0][:7])
    with torch.inference_mode():
        out = prep.execute(images, identity)
        frames, mask, width, height, length = out.args
        assert (width, height, length) == (240, 160, 5)
        assert frames.shape == (5, 160, 240, 3) and mask.shape == (5, 160, 240)
        assert any("trimmed to 5 frames" in t for t in out.ui["text"])  # shown on the node
        restored = restore.execute(frames, images, mask).args[0]  # uncropped source: cropped the same way
    assert restored.shape == frames.shape
    src = images[:5, 5:165, 5:245]
    # Beyond the dilation (radius 12) and the feather (radius 25) of every frame's mask.
    union = ((mask > 0.5).any(0).numpy() * 255).astype(np.uint8)
    far = torch.from_numpy(cv2.dilate(union, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (79, 79))) == 0)
    assert far.any() and not far.all()
    assert torch.equal(restored[:, far], src[:, far])


def test_nodes_refuse_bad_input_with_what_to_do(identity):
    prep = conftest.pack_module("nodes.prepare_face_swap").PrepareFaceSwapVideo
    restore = conftest.pack_module("nodes.restore_background").RestoreBackground
    with pytest.raises(ValueError, match="no video frames.*Get Video Components"):
        prep.execute(torch.zeros(0, 64, 64, 3), identity)
    bad = torch.full((5, 64, 64, 3), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        prep.execute(bad, identity)
    with pytest.raises(ValueError, match="do not match the generated video"):
        restore.execute(torch.zeros(5, 64, 64, 3), torch.zeros(5, 48, 48, 3), torch.zeros(5, 64, 64))
    with pytest.raises(ValueError, match="mask .* does not match"):
        restore.execute(torch.zeros(5, 64, 64, 3), torch.zeros(5, 64, 64, 3), torch.zeros(5, 32, 32))


def test_prepare_face_swap_script_writes_frames_masks_and_info(tmp_path):
    from PIL import Image
    frames, _ = V.make_video(7, 200, 150, no_face=(2,))
    V.write_video(str(tmp_path / "video.mp4"), frames, fps=25)
    Image.fromarray(V.astronaut()).save(tmp_path / "ref.png")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(HERE, "prepare_face_swap.py"), str(tmp_path / "video.mp4"),
                           str(tmp_path / "ref.png"), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "info.json").read_text())
    assert (info["width"], info["height"], info["length"], info["fps"]) == (192, 144, 5, 25.0)
    assert len(info["frames"]) == 5 and info["frames"][2]["face_box"] is None
    assert all(info["frames"][i]["face_box"] for i in (0, 1, 3, 4))
    assert any("frames 2" in w for w in info["warnings"])
    for i in range(5):
        frame = np.asarray(Image.open(out / f"frame_{i:05d}.png"))
        mask = np.asarray(Image.open(out / f"mask_{i:05d}.png"))
        assert frame.shape == (144, 192, 3) and mask.shape == (144, 192) and mask.dtype == np.uint8
        assert (mask.max() == 255) == (i != 2)
