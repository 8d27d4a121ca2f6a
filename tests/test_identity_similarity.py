"""Identity Similarity: the face-embedding score on real photographs, videos made from them, the
node in-process, its chart, its command-line twin and its errors.

The dlib embedder (dlib-bin + face-recognition-models, optional for users) is installed by
requirements-test.txt, so these tests run in CI; a missing package fails them, never skips.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import folder_paths

import conftest
import identity_media

HERE = os.path.dirname(os.path.abspath(__file__))
NO_FACE = (5, 6)


@pytest.fixture(scope="module")
def fe():
    return conftest.pack_module("engine.faces.embed")


@pytest.fixture(scope="module")
def dlib_embedder(fe):
    return fe.load_embedder("dlib")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    models = str(tmp_path_factory.mktemp("models"))
    folder_paths.add_model_folder_path("standin", os.path.join(models, "standin"))
    conftest.pack_module("nodes.load_adapter").register_model_folder()
    return conftest.pack_module("nodes.identity_similarity").IdentitySimilarity


def astronaut_box(fe):
    _, detect = fe.face._pick_detector("auto", (), [])
    return max(detect(identity_media.astronaut()), key=fe._area)


@pytest.fixture(scope="module")
def astronaut_video(fe):
    """17 frames, 832x480: the astronaut photo panned, zoomed and swayed; frames 5 and 6 show no face."""
    return identity_media.video_from_photo(identity_media.astronaut(), astronaut_box(fe), frames=17,
                                           no_face=NO_FACE)


def test_calibration_same_person_above_different_people(fe, dlib_embedder):
    import calibrate_identity
    r = calibrate_identity.calibrate(fe, dlib_embedder, tiny=False)
    assert r["missed"] == [] and len(r["people"]) == 3
    same_low = min(r["same_vs_original"]["min"], r["same_among_variants"]["min"])
    different_high = r["different_people"]["max"]
    assert same_low > different_high, r
    # The shipped threshold separates what was measured here.
    assert different_high < fe.THRESHOLDS["dlib"] < same_low, r


def test_video_of_the_person_scores_high_in_every_frame(fe, dlib_embedder, astronaut_video):
    score = fe.score_video(identity_media.astronaut(), astronaut_video, dlib_embedder)
    assert score.frames == 17 and score.faces == 15
    assert score.no_face_frames == list(NO_FACE)
    assert all((v is None) == (i in NO_FACE) for i, v in enumerate(score.per_frame))
    assert score.min >= score.threshold and score.below == 0
    assert score.mean == pytest.approx(np.mean(score.scored))
    assert score.face_share == pytest.approx(15 / 17)


def test_video_of_another_person_scores_low(fe, dlib_embedder, astronaut_video):
    score = fe.score_video(identity_media.grace_hopper(), astronaut_video, dlib_embedder)
    assert score.faces == 15 and score.no_face_frames == list(NO_FACE)
    assert max(score.scored) < score.threshold and score.below == 15


def test_no_face_in_the_reference_is_an_error(fe, dlib_embedder, astronaut_video):
    with pytest.raises(fe.NoReferenceFace, match="No face found in the reference") as err:
        fe.score_video(identity_media.no_face_frame(), astronaut_video[:2], dlib_embedder)
    # Only advice the node can follow: it offers no detector 'none'.
    assert "'none'" not in str(err.value) and "choose another detector" in str(err.value)


def test_no_face_anywhere_is_reported_not_zero(fe, dlib_embedder):
    frames = np.stack([identity_media.no_face_frame(seed=s) for s in range(3)])
    score = fe.score_video(identity_media.astronaut(), frames, dlib_embedder)
    assert score.per_frame == [None, None, None] and score.mean is None and score.faces == 0
    d = score.as_dict()
    assert d["mean"] is None and d["min"] is None and d["faces"] == 0
    assert "no face in any frame" in score.summary()


def frames_tensor(video):
    return torch.from_numpy(np.asarray(video, dtype=np.float32) / 255.0)


def test_node_with_a_photo_and_with_an_identity(node, astronaut_video):
    objects = conftest.pack_module("nodes.sockets")
    frames = frames_tensor(astronaut_video[3:9])          # 6 frames, 2 without a face (5, 6)
    photo = frames_tensor(identity_media.astronaut()[None])
    out = node.execute(frames, reference_image=photo, embedder="dlib")
    plot, mean, minimum, p10, share, report = out.args
    assert plot.shape == (1, 400, 1024, 3) and plot.dtype == torch.float32 and 0 <= plot.min() <= plot.max() <= 1
    data = json.loads(report)
    assert data["frames"] == 6 and data["faces"] == 4 and data["no_face_frames"] == [2, 3]
    assert data["per_frame"][2] is None and data["per_frame"][3] is None
    assert share == pytest.approx(4 / 6) and mean == pytest.approx(data["mean"], abs=1e-4)
    assert minimum >= 0.92 and p10 >= minimum
    ui = out.ui if isinstance(out.ui, dict) else out.ui.as_dict()
    assert ui["images"] and "4/6 frames" in ui["text"][0]

    # An identity from Encode Reference Face: its prepared 512x512 picture is the reference.
    face = conftest.pack_module("engine.faces.detect")
    prepared = face.prepare_reference(identity_media.astronaut())
    identity = objects.Identity(latent=torch.zeros(1, 16, 1, 64, 64), image=torch.from_numpy(prepared.image)[None],
                                vae_kind="test", latent_channels=16)
    by_identity = json.loads(node.execute(frames, identity=identity, embedder="dlib").args[5])
    assert by_identity["faces"] == 4 and by_identity["min"] >= 0.92


def test_node_errors_say_what_to_do(node, astronaut_video):
    frames = frames_tensor(astronaut_video[:2])
    with pytest.raises(ValueError, match="connect Encode Reference Face's identity"):
        node.execute(frames)
    with pytest.raises(ValueError, match="IMAGE batch"):
        node.execute(torch.zeros(3, 4), reference_image=frames[:1])
    fe = conftest.pack_module("engine.faces.embed")
    with pytest.raises(fe.EmbedderUnavailable, match="w600k_r50.onnx"):
        node.execute(frames, reference_image=frames[:1], embedder="arcface")
    with pytest.raises(ValueError, match="No face found in the reference"):
        node.execute(frames, reference_image=frames_tensor(identity_media.no_face_frame()[None]), embedder="dlib")


def test_missing_dlib_says_what_to_install(fe, monkeypatch):
    real = fe.importlib.util.find_spec
    monkeypatch.setattr(fe.importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real(name, *a))
    with pytest.raises(fe.EmbedderUnavailable, match="pip install dlib-bin face-recognition-models"):
        fe.load_embedder("dlib")
    with pytest.raises(fe.EmbedderUnavailable, match="No face embedder is available"):
        fe.load_embedder("auto")


def test_arcface_file_is_preferred_and_a_bad_one_is_reported(fe, tmp_path):
    (tmp_path / fe.ARCFACE_FILE).write_bytes(b"not an onnx model")
    with pytest.raises(fe.EmbedderUnavailable, match="could not be loaded as an ONNX face embedder"):
        fe.load_embedder("auto", [str(tmp_path)])


def test_arcface_alignment_puts_the_face_on_the_template(fe):
    rgb = identity_media.astronaut()
    box = astronaut_box(fe)
    net = fe.face._read_tflite(fe.face._bundled(fe.face.BLAZEFACE_FILE, fe.face.BLAZEFACE_SHA256))
    kp = fe._blazeface_keypoints(net, rgb, box)
    x1, y1, x2, y2 = box[:4]
    assert kp is not None and all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in kp[:4])
    assert kp[0, 1] < kp[2, 1] < kp[3, 1] and kp[1, 1] < kp[2, 1]          # eyes above nose above mouth
    points = fe.arcface_points(kp)
    m, _ = fe.cv2.estimateAffinePartial2D(points, fe.ARCFACE_TEMPLATE, method=fe.cv2.LMEDS)
    moved = points @ m[:, :2].T + m[:, 2]
    assert np.abs(moved - fe.ARCFACE_TEMPLATE).max() < 6.0                  # pixels of the 112 chip
    chip = fe.align_arcface(rgb, points)
    assert chip.shape == (112, 112, 3) and chip.std() > 20


def test_plot_marks_threshold_low_frames_and_missing_faces(fe):
    plot = conftest.pack_module("engine.faces.plot")
    per_frame = [0.97, 0.96, None, None, 0.80, 0.95, 0.96, 0.97]
    img = plot.plot_scores(per_frame, 0.92, "t", "s", width=800, height=320)
    assert img.shape == (320, 800, 3) and img.dtype == np.uint8
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert plot.NOFACE in colours and plot.BAD in colours and plot.GOOD in colours
    clean = plot.plot_scores([0.97, 0.96, 0.95], 0.92, width=800, height=320)
    colours = {tuple(c) for c in clean.reshape(-1, 3)}
    assert plot.NOFACE not in colours and plot.GOOD in colours
    # The low frame sits below the threshold line on the chart.
    lo, hi = plot.y_range(per_frame, 0.92)
    assert lo <= 0.80 - 0.05 + 1e-9 and hi == 1.0


def test_command_line_prints_one_json_line(fe, tmp_path, astronaut_video):
    ref = tmp_path / "ref.png"
    Image.fromarray(identity_media.astronaut()).save(ref)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(astronaut_video[4:8]):                        # frames 5, 6 have no face
        Image.fromarray(f).save(frames / f"{i:03d}.png")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "identity_score.py"), str(ref), str(frames),
                           "--embedder", "dlib", "--plot", str(tmp_path / "plot.png")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert {"embedder", "frames", "faces", "mean", "min", "per_frame"} <= set(data)
    assert data["embedder"] == "dlib_resnet_v1" and data["frames"] == 4 and data["faces"] == 2
    assert data["per_frame"][1] is None and data["per_frame"][2] is None and data["min"] >= 0.92
    with Image.open(tmp_path / "plot.png") as im:
        assert im.size == (1024, 400)


def test_arcface_file_is_in_the_manifest(fe):
    manifest = conftest.pack_module("engine.weights")
    entry = manifest.find(fe.ARCFACE_FILE)
    assert entry is not None and entry.folder == "standin" and entry.url == fe.ARCFACE_URL
    assert entry.kind == "face_embedder"


def test_arcface_path_runs_a_model_file_in_its_real_format(fe, tmp_path, astronaut_video):
    """A random-weight network with ArcFace's interface (tests/make_tiny_arcface.py), named as the
    real file: auto prefers it, it loads (onnxruntime or OpenCV) and scores every frame with a face."""
    import shutil
    shutil.copy(os.path.join(HERE, "data", "tiny_arcface_random.onnx"), tmp_path / fe.ARCFACE_FILE)
    embedder = fe.load_embedder("auto", [str(tmp_path)])
    assert embedder.kind == "arcface" and embedder.name == "arcface:" + fe.ARCFACE_FILE
    score = fe.score_video(identity_media.astronaut(), astronaut_video[4:8], embedder)
    assert score.no_face_frames == [1, 2] and score.faces == 2
    assert all(-1.0 <= v <= 1.0 for v in score.scored) and score.threshold == fe.THRESHOLDS["arcface"]
    same = fe.score_video(identity_media.astronaut(), identity_media.astronaut()[None], embedder)
    assert same.per_frame[0] == pytest.approx(1.0, abs=1e-6)
