"""The pilot's figures on videos made from real photographs: motion known from how the picture
was moved, identity known from whose photo it is."""

import sys

import cv2
import numpy as np
import pytest

import identity_media
from conftest import ROOT

sys.path.insert(0, ROOT)
from engine.pilot import score  # noqa: E402


def write_mp4(path, frames, fps=16):
    h, w = frames.shape[1:3]
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()
    return path


def pan(rgb, step, frames=8, size=256, top=100, left=40):
    """A camera sliding right by ``step`` pixels a frame over the photo."""
    return np.stack([np.ascontiguousarray(rgb[top:top + size, left + step * i: left + step * i + size])
                     for i in range(frames)])


@pytest.fixture(scope="module")
def astronaut():
    return identity_media.astronaut()


def test_motion_still_is_zero_and_a_pan_measures_its_speed(tmp_path, astronaut):
    still = write_mp4(str(tmp_path / "still.mp4"), pan(astronaut, 0))
    slow = write_mp4(str(tmp_path / "slow.mp4"), pan(astronaut, 4))
    fast = write_mp4(str(tmp_path / "fast.mp4"), pan(astronaut, 8))
    m_still, m_slow, m_fast = (score.motion(score.read_frames(p)) for p in (still, slow, fast))
    assert m_still < 0.001, m_still
    # 4 px a frame on a 256 px frame is 0.0156 of the frame; the flow sees most of it
    # (flat areas of the photo pull the mean down a little).
    assert 0.5 * 4 / 256 < m_slow < 1.2 * 4 / 256, m_slow
    assert 1.6 < m_fast / m_slow < 2.4, (m_slow, m_fast)
    assert m_slow > 20 * max(m_still, 1e-5)


def test_motion_is_relative_to_the_frame_size(astronaut):
    big = pan(astronaut, 8, size=256)
    small = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in big])  # 2 px a frame at 64
    assert abs(score.motion(small) - score.motion(big)) < 0.35 * score.motion(big), (score.motion(small), score.motion(big))


def test_identity_same_person_high_other_person_low(tmp_path, astronaut):
    from engine.faces import embed
    _, detect = embed.face._pick_detector("auto", (), [])
    box = max(detect(astronaut), key=embed._area)
    video = identity_media.video_from_photo(astronaut, box, frames=5, width=416, height=240)
    path = write_mp4(str(tmp_path / "astronaut.mp4"), video)
    photo_a = str(tmp_path / "a.png")
    photo_g = str(tmp_path / "g.png")
    from PIL import Image
    Image.fromarray(astronaut).save(photo_a)
    Image.fromarray(identity_media.grace_hopper()).save(photo_g)
    same = score.score_file(path, photo_a)
    other = score.score_file(path, photo_g)
    s, o = same["identity"], other["identity"]
    assert "error" not in s, s
    assert s["face_share"] == 1.0 and s["frames"] == 5
    assert s["mean"] > s["threshold"] and s["p10"] > s["threshold"], s
    assert o["mean"] < o["threshold"], o
    assert s["mean"] - o["mean"] > 0.05, (s, o)
    assert same["motion"] > 0.001  # the camera drifts and zooms


def test_contact_frames_are_small_jpegs(tmp_path, astronaut):
    path = write_mp4(str(tmp_path / "v.mp4"), pan(astronaut, 4, frames=9))
    frames = score.contact_frames(path, count=4, height=48)
    assert len(frames) == 4 and all(f[:2] == b"\xff\xd8" for f in frames)
    import io
    from PIL import Image
    assert [Image.open(io.BytesIO(f)).size for f in frames] == [(48, 48)] * 4
