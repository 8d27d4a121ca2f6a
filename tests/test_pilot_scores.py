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


def test_report_from_scored_videos_is_self_contained(tmp_path, astronaut):
    """Videos of two real people at two 'strengths' (here: how far the camera pans), scored and
    recorded as the pilot records them; the report ranks, plots and shows them offline."""
    import re
    from PIL import Image
    from engine.pilot import report, results
    hopper = identity_media.grace_hopper()
    photos = {"astronaut": astronaut, "hopper": hopper}
    out = tmp_path / "out"
    (out / "videos").mkdir(parents=True)
    n = 0
    for name, rgb in photos.items():
        photo = str(tmp_path / f"{name}.png")
        Image.fromarray(rgb).save(photo)
        h, w = rgb.shape[:2]
        for strength, step in ((0.5, 6), (1.0, 0)):   # the "stronger" setting keeps still
            for seed in (1, 2):
                frames = pan(rgb, step + seed - 1, frames=6, size=min(h, w) - 80, top=20, left=20)
                rel = f"videos/{name}_{strength}_{seed}.mp4"
                write_mp4(str(out / rel), frames)
                scores = score.score_file(str(out / rel), photo)
                scores.update(time_s=1.0, wall_s=1.5)
                results.append(str(out / results.RESULTS), {
                    "key": f"k{n}", "person": name, "prompt": "a prompt", "seed": seed,
                    "settings": {"strength": strength}, "server": "http://gpu1:8188", "file": rel, "sha256": "0" * 64,
                    "models": [{"role": "standin_adapter", "name": "Stand-In_wan2.1_T2V_14B.ckpt", "sha256": "ab" * 32}],
                    "consent": {"status": "recorded" if name == "astronaut" else "none", "in_manifest": name == "astronaut",
                                "record": {"subject": "Eileen Collins", "purpose": "test", "valid_until": "2099-12-31",
                                           "document_id": "C-1"} if name == "astronaut" else None},
                    "scores": scores, "provenance": {"manifest": True}})
                n += 1
    results.append(str(out / results.FAILURES), {"key": "kf", "person": "hopper", "seed": 3, "settings": {"strength": 1.0},
                                                 "server": "http://gpu2:8188", "reason": "HTTP 400: consent required"})
    html_path, csv_path = report.write(str(out), None, min_motion=0.005)
    page = open(html_path, encoding="utf-8").read()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the network
    assert page.count("data:image/jpeg;base64,") == 8 * 4    # 4 frames of each of the 8 videos
    assert page.count("<circle cx=") >= 2 * 8                # two plots, one point per video
    # the still setting keeps the face at least as well, but only the panning one moves enough
    assert "at motion &ge; 0.005: <b>strength=0.5</b>" in page
    assert "HTTP 400: consent required" in page and "no consent record" in page
    assert "Stand-In_wan2.1_T2V_14B.ckpt" in page
    rows = open(csv_path, encoding="utf-8").read().splitlines()
    assert len(rows) == 1 + 8 and rows[0].startswith("person,prompt,seed,strength,similarity_mean")
