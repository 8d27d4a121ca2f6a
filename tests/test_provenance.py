"""Consent records, C2PA-labelled saves, verification and the audit log (in-process, real
ComfyUI video saving, real c2pa-python signing and validation)."""

import dataclasses
import datetime
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import folder_paths
import nodes as comfy_nodes  # ComfyUI's nodes.py, imported first as ComfyUI does (its SaveImage)
from comfy_api.latest import InputImpl, Types
from comfy_api.latest import io as cio

import conftest

consent = conftest.pack_module("engine.provenance.consent")
provenance = conftest.pack_module("engine.provenance.c2pa_label")
audit = conftest.pack_module("engine.provenance.audit")
objects = conftest.pack_module("nodes.sockets")
save_labelled = conftest.pack_module("nodes.save_labelled")
consent_record = conftest.pack_module("nodes.consent_record")
apply_identity = conftest.pack_module("nodes.apply_identity")

assert hasattr(comfy_nodes, "SaveImage")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERIFY = os.path.join(ROOT, "tools", "verify_provenance.py")
TODAY = datetime.date.today()


@pytest.fixture
def comfy_dirs(tmp_path, monkeypatch):
    """A private user and output directory, as a ComfyUI installation has."""
    user, out, models = tmp_path / "user", tmp_path / "output", tmp_path / "models"
    for d in (user, out, models / "diffusion_models"):
        d.mkdir(parents=True)
    monkeypatch.setattr(folder_paths, "user_directory", str(user))
    monkeypatch.setattr(folder_paths, "output_directory", str(out))
    return {"user": str(user), "output": str(out), "state": str(user / "__standin"), "models": str(models)}


def write_policy(dirs, **policy):
    os.makedirs(dirs["state"], exist_ok=True)
    with open(os.path.join(dirs["state"], "policy.json"), "w") as f:
        json.dump(policy, f)


def frames(n=9, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, h, w, 3, generator=g)
    return torch.stack([torch.roll(base[0], shifts=4 * i, dims=1) for i in range(n)]).clamp(0, 1)


def video_of(images, fps=16):
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=images, frame_rate=Fraction(fps)))


def decode(path):
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def packets(path):
    with av.open(path) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def stream_info(path):
    with av.open(path) as c:
        s = c.streams.video[0]
        return s.codec_context.name, s.codec_context.pix_fmt, s.width, s.height, s.average_rate, s.frames


def make_identity(record=None):
    image = torch.from_numpy(np.random.default_rng(3).random((1, 32, 32, 3)).astype(np.float32))
    return objects.Identity(latent=torch.zeros(1, 16, 1, 4, 4), image=image, vae_kind="test",
                            latent_channels=16, detector="none", consent=record)


def valid_record(**kw):
    args = dict(subject="Jane Doe", purpose="product video, web", valid_until=(TODAY + datetime.timedelta(days=30)).isoformat(),
                document_id="CONTRACT-2026-17", document_sha256="ab" * 32)
    args.update(kw)
    return consent.make_record(**args)


def call_node(node_cls, prompt=None, unique_id="9", **inputs):
    node_cls.hidden = cio.HiddenHolder.from_dict({cio.Hidden.prompt: prompt, cio.Hidden.unique_id: unique_id,
                                                 cio.Hidden.extra_pnginfo: {"workflow": {"nodes": []}}})
    return node_cls.execute(**inputs)


def saved_files(dirs, ext):
    return sorted(os.path.join(r, n) for r, _, ns in os.walk(dirs["output"]) for n in ns if n.endswith(ext))


def audit_entries(dirs):
    log = audit.AuditLog(os.path.join(dirs["state"], "audit"))
    return audit.read(log.files())


def flip_media_byte(path, out):
    data = bytearray(open(path, "rb").read())
    i = data.index(b"mdat") + 64  # inside the coded frames, which the manifest's hash covers
    data[i] ^= 0x01
    open(out, "wb").write(bytes(data))


# ------------------------------------------------------------------------------------------
# Consent
# ------------------------------------------------------------------------------------------

def test_consent_record_validation_names_every_problem():
    with pytest.raises(consent.ConsentError) as e:
        consent.make_record("", "", "31/12/2027", "", "not-a-hash")
    text = str(e.value)
    for part in ("subject", "purpose", "YYYY-MM-DD", "64 hexadecimal"):
        assert part in text, text
    with pytest.raises(consent.ConsentError, match="signed consent document"):
        consent.make_record("A", "B", "2999-01-01")
    record = valid_record(document_sha256="AB" * 32)
    assert record.document_sha256 == "ab" * 32 and not record.expired(TODAY)


def test_expired_consent_is_refused_at_the_record_and_before_sampling(comfy_dirs):
    yesterday = (TODAY - datetime.timedelta(days=1)).isoformat()
    with pytest.raises(consent.ConsentError, match="expired on " + yesterday):
        valid_record(valid_until=yesterday)
    with pytest.raises(ValueError, match="expired"):  # raised: ComfyUI reports it once, on the node
        consent_record.ConsentRecord.validate_inputs("Jane", "ad", yesterday, "C-1", "")
    # A field wired from another node is not known at validation; execute checks it then.
    assert consent_record.ConsentRecord.validate_inputs("Jane", "ad", None, "C-1", "") is True
    with pytest.raises(ValueError, match="expired"):
        consent_record.ConsentRecord.execute(make_identity(), "Jane", "ad", yesterday, "C-1", "")
    # A record that was valid when attached and has expired since: Apply refuses it, before it
    # touches the model (None here would fail on first use) -- whatever the policy says.
    still_valid = valid_record(valid_until=TODAY.isoformat())
    expired = dataclasses.replace(still_valid, valid_until=yesterday)
    with pytest.raises(ValueError, match="expired"):
        apply_identity.ApplyRSACPM.execute(None, None, make_identity(expired))
    # Today is still inside the validity.
    consent.check_generation(still_valid, consent.load_policy(comfy_dirs["state"]), TODAY)


def test_policy_off_by_default_and_when_on_refuses_an_identity_without_consent(comfy_dirs):
    consent_record.enforce(make_identity())  # no policy file: nothing required
    write_policy(comfy_dirs, require_consent=True)
    with pytest.raises(ValueError) as e:
        apply_identity.ApplyRSACPM.execute(None, None, make_identity())
    assert "requires a consent record" in str(e.value) and "Consent Record node" in str(e.value)
    consent_record.enforce(make_identity(valid_record()))
    attached = consent_record.ConsentRecord.execute(make_identity(), "Jane Doe", "ad",
                                                    (TODAY + datetime.timedelta(days=3)).isoformat(), "C-9", "")[0]
    assert attached.consent.document_id == "C-9"
    consent_record.enforce(attached)


def test_a_broken_policy_file_refuses_rather_than_runs_unchecked(comfy_dirs):
    os.makedirs(comfy_dirs["state"])
    with open(os.path.join(comfy_dirs["state"], "policy.json"), "w") as f:
        f.write("{require_consent: true")
    with pytest.raises(ValueError, match="is not valid JSON"):
        consent_record.enforce(make_identity(valid_record()))
    write_policy(comfy_dirs, require_consnet=True)
    with pytest.raises(ValueError, match="unknown setting require_consnet"):
        consent_record.enforce(make_identity(valid_record()))


def test_the_policy_fingerprint_changes_with_the_policy(comfy_dirs):
    before = apply_identity.ApplyRSACPM.fingerprint_inputs()
    write_policy(comfy_dirs, require_consent=True)
    assert apply_identity.ApplyRSACPM.fingerprint_inputs() != before


# ------------------------------------------------------------------------------------------
# Signing and verification
# ------------------------------------------------------------------------------------------

def test_sign_then_read_back_gives_the_same_fields(comfy_dirs, tmp_path):
    path = str(tmp_path / "clip.mp4")
    video_of(frames()).save_to(path)
    key = provenance.installation_key(os.path.join(comfy_dirs["state"], "signing"))
    generation = {"seed": 1234, "settings": {"13:StandIn_SampleVideo": {"steps": 20, "cfg": 5.0}},
                  "models": [{"name": "wan.safetensors", "sha256": "cd" * 32, "role": "base_model"}],
                  "reference": {"sha256_rgb8": "ef" * 32}, "consent": valid_record().to_dict()}
    result = provenance.sign_file(path, generation, key)
    assert result.bytes_added > 0 and result.self_signed
    report = provenance.verify(path)
    assert report.ok and report.valid and not report.modified and report.ai_generated
    assert report.self_signed is True and not report.trusted
    got = {k: v for k, v in report.generation.items() if k != "signer"}
    assert got == generation
    assert report.generation["signer"]["self_signed"] is True
    # The installation key is made once and reused.
    assert provenance.installation_key(os.path.join(comfy_dirs["state"], "signing")) == key


def test_one_changed_byte_fails_verification(comfy_dirs, tmp_path):
    path = str(tmp_path / "clip.mp4")
    video_of(frames()).save_to(path)
    provenance.sign_file(path, {"seed": 1}, provenance.installation_key(comfy_dirs["state"]))
    bad = str(tmp_path / "changed.mp4")
    flip_media_byte(path, bad)
    report = provenance.verify(bad)
    assert report.has_manifest and not report.valid and report.modified and not report.ok
    ok = subprocess.run([sys.executable, VERIFY, path], capture_output=True, text=True)
    changed = subprocess.run([sys.executable, VERIFY, bad], capture_output=True, text=True)
    unsigned = str(tmp_path / "plain.mp4")
    video_of(frames()).save_to(unsigned)
    none = subprocess.run([sys.executable, VERIFY, unsigned], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "modified after signing: no" in ok.stdout and "self-signed" in ok.stdout
    assert changed.returncode == 1 and "modified after signing: YES" in changed.stdout
    assert none.returncode == 2 and "no valid C2PA manifest" in none.stdout


def test_a_configured_certificate_is_used_and_not_marked_self_signed(comfy_dirs, tmp_path):
    chain, key = provenance._split_pem(provenance._make_installation_pem())
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    write_policy(comfy_dirs, signing={"certificate": str(tmp_path / "chain.pem"), "private_key": str(tmp_path / "key.pem")})
    out = call_node(save_labelled.SaveLabelledVideo, video=video_of(frames()), filename_prefix="cert/v",
                    format="auto", codec="auto")
    assert "configured certificate" in out.args[0] and "SELF-SIGNED" not in out.args[0]
    (path,) = saved_files(comfy_dirs, ".mp4")
    report = provenance.verify(path)
    assert report.ok and report.self_signed is False
    assert not os.path.exists(os.path.join(comfy_dirs["state"], "signing", provenance.INSTALLATION_KEY_FILE))


# ------------------------------------------------------------------------------------------
# The save nodes
# ------------------------------------------------------------------------------------------

def graph(model_file):
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": model_file, "weight_dtype": "default"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a person waves", "clip": ["2", 0]}},
        "13": {"class_type": "StandIn_SampleVideo", "inputs": {"model": ["1", 0], "positive": ["3", 0],
                                                               "seed": 77, "steps": 20, "cfg": 5.0}},
        "20": {"class_type": "CreateVideo", "inputs": {"images": ["13", 1], "fps": 16.0}},
        "21": {"class_type": "StandIn_SaveLabelledVideo", "inputs": {"video": ["20", 0]}},
        "99": {"class_type": "SaveLatent", "inputs": {"samples": ["13", 0]}},  # not upstream of 21
    }


def test_labelled_video_carries_what_made_it_and_decodes_like_the_plain_save(comfy_dirs, monkeypatch):
    model_path = os.path.join(comfy_dirs["models"], "diffusion_models", "tiny_wan.safetensors")
    with open(model_path, "wb") as f:
        f.write(b"not really a model" * 100)
    monkeypatch.setattr(folder_paths, "get_full_path",
                        lambda folder, name: model_path if (folder, name) == ("diffusion_models", "tiny_wan.safetensors") else None)
    images = frames(n=17)
    identity = make_identity(valid_record())
    unsigned = os.path.join(comfy_dirs["output"], "unsigned.mp4")
    sign_file = provenance.sign_file

    def keep_a_copy_then_sign(path, *args, **kwargs):  # the file as written, before the label goes in
        shutil.copyfile(path, unsigned)
        return sign_file(path, *args, **kwargs)

    monkeypatch.setattr(provenance, "sign_file", keep_a_copy_then_sign)
    out = call_node(save_labelled.SaveLabelledVideo, prompt=graph("tiny_wan.safetensors"), unique_id="21",
                    video=video_of(images), filename_prefix="standin/x", format="auto", codec="auto", identity=identity)
    assert "self-signed" in out.args[0] and "Consent: Jane Doe" in out.args[0]
    assert out.ui["text"] and out.ui["images"][0]["filename"].endswith(".mp4")
    (labelled,) = [f for f in saved_files(comfy_dirs, ".mp4") if f != unsigned]

    # Labelling leaves the video stream as it was encoded, packet for packet ...
    assert packets(labelled) == packets(unsigned) and len(packets(labelled)) == 17
    # ... and the encode is Save Video's: same stream, the same frames up to x264 itself (two
    # encodes of the same frames differed by a few levels once in a fresh-clone run).
    plain = os.path.join(comfy_dirs["output"], "plain.mp4")
    video_of(images).save_to(plain)  # what Save Video writes
    assert stream_info(labelled) == stream_info(plain)
    a, b = decode(labelled), decode(plain)
    assert a.shape == b.shape == (17, 64, 96, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0

    report = provenance.verify(labelled)
    assert report.ok and report.ai_generated
    g = report.generation
    assert g["seed"] == 77 and g["consent"]["subject"] == "Jane Doe"
    assert g["models"] == [{"name": "tiny_wan.safetensors", "sha256": provenance.sha256_file(model_path),
                            "role": "base_model", "node": "1", "class_type": "UNETLoader"}]
    assert g["reference"]["sha256_rgb8"] == provenance.sha256_pixels(identity.image[0].numpy())
    assert g["settings"]["3:CLIPTextEncode"]["text"] == {"sha256": provenance.sha256_bytes(b"a person waves")}
    assert "a person waves" not in json.dumps(g) and "99:SaveLatent" not in g["settings"]
    with av.open(labelled) as c:
        tags = dict(c.metadata)
    assert "AI-generated" in tags.get("comment", "") and "prompt" in tags and "workflow" in tags

    (entry,), broken = audit_entries(comfy_dirs)
    assert broken == 0
    assert entry["outputs"][0]["sha256"] == provenance.sha256_file(labelled)
    assert entry["outputs"][0]["file"] == os.path.relpath(labelled, comfy_dirs["output"])
    assert entry["consent"] == valid_record().to_dict() and entry["seed"] == 77 and entry["node_id"] == "21"
    assert entry["reference"] == g["reference"] and "png_base64" not in json.dumps(entry)
    assert "a person waves" not in json.dumps(entry)


def test_visible_mark_and_audit_options(comfy_dirs):
    write_policy(comfy_dirs, audit={"include_prompts": True, "include_reference_image": True})
    images = frames(n=5, h=96, w=160) * 0 + 0.8  # plain light grey: the dark box shows
    call_node(save_labelled.SaveLabelledVideo, prompt=graph("missing.safetensors"), unique_id="21",
              video=video_of(images), filename_prefix="m/v", format="mp4", codec="auto", visible_mark=True,
              identity=make_identity())
    (path,) = saved_files(comfy_dirs, ".mp4")
    a = decode(path).astype(int)
    corner, centre = a[:, -12:, -40:], a[:, :40, :40]
    assert centre.mean() > 180 and corner.mean() < centre.mean() - 40
    (entry,), _ = audit_entries(comfy_dirs)
    assert entry["settings"]["3:CLIPTextEncode"]["text"] == "a person waves"
    assert entry["reference"]["png_base64"] and entry["models"][0]["sha256"] is None
    assert provenance.verify(path).generation["visible_mark"] is True


def test_labelled_png(comfy_dirs):
    out = call_node(save_labelled.SaveLabelledImage, images=frames(n=2), filename_prefix="img/p",
                    identity=make_identity(valid_record()))
    paths = saved_files(comfy_dirs, ".png")
    assert len(paths) == 2 and len(out.ui["images"]) == 2
    for path in paths:
        report = provenance.verify(path)
        assert report.ok and report.ai_generated and report.generation["consent"]["subject"] == "Jane Doe"
    from PIL import Image
    assert "AI-generated" in Image.open(paths[0]).text["comment"]
    (entry,), _ = audit_entries(comfy_dirs)
    assert len(entry["outputs"]) == 2


def test_the_save_refuses_an_expired_record(comfy_dirs):
    record = dataclasses.replace(valid_record(), valid_until=(TODAY - datetime.timedelta(days=2)).isoformat())
    with pytest.raises(ValueError, match="expired"):
        call_node(save_labelled.SaveLabelledVideo, video=video_of(frames()), filename_prefix="e/v", format="auto",
                  codec="auto", identity=make_identity(record))
    assert saved_files(comfy_dirs, ".mp4") == []


# ------------------------------------------------------------------------------------------
# The audit log
# ------------------------------------------------------------------------------------------

def test_truncated_last_line_is_detected_and_later_appends_stay_well_formed(tmp_path):
    log = audit.AuditLog(str(tmp_path), fsync=False)
    for i in range(3):
        assert log.append({"i": i, "pad": "x" * 50}) is False
    data = open(log.path, "rb").read()
    with open(log.path, "wb") as f:  # a crash in the middle of the third line
        f.write(data[: len(data) - 30])
    assert log.append({"i": 3}) is True
    assert log.append({"i": 4}) is False
    entries, broken = audit.read(log.path)
    assert [e["i"] for e in entries] == [0, 1, 3, 4] and broken == 1
    assert open(log.path, "rb").read().endswith(b'{"i":4}\n')


def _append_many(directory, worker, count, max_bytes):
    log = audit.AuditLog(directory, max_bytes=max_bytes, backups=50, fsync=False)
    for i in range(count):
        # Lines far longer than PIPE_BUF: atomicity must come from the lock, not luck.
        log.append({"worker": worker, "i": i, "pad": f"{worker}-{i}-" + "y" * 9000})


@pytest.mark.parametrize("max_bytes", [10 * 2**20, 200_000])
def test_concurrent_appends_from_processes_give_whole_lines(tmp_path, max_bytes):
    ctx = multiprocessing.get_context("spawn" if sys.platform == "win32" else "fork")
    workers, count = 4, 40
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, count, max_bytes)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = audit.AuditLog(str(tmp_path), backups=50)
    entries, broken = audit.read(log.files())
    rotations = [e for e in entries if e.get("event") == "audit_rotated"]
    entries = [e for e in entries if "event" not in e]
    assert broken == 0 and len(entries) == workers * count
    assert len(rotations) == len(log.files()) - 1  # every rotation is recorded
    assert sorted((e["worker"], e["i"]) for e in entries) == [(w, i) for w in range(workers) for i in range(count)]
    for e in entries:
        assert e["pad"].startswith(f"{e['worker']}-{e['i']}-")
    if max_bytes < 2**20:
        assert len(log.files()) > 1  # it rotated, and no line was lost or split doing so
        assert all(os.path.getsize(f) <= max_bytes for f in log.files())


def test_rotation_keeps_every_file_and_records_each_rotation(tmp_path):
    log = audit.AuditLog(str(tmp_path), max_bytes=1000, backups=2, fsync=False)
    for i in range(30):
        log.append({"i": i, "pad": "z" * 200})
    files = log.files()
    assert len(files) > 3  # backups=2 deletes nothing unless delete_old_files says so
    entries, broken = audit.read(files)
    assert broken == 0 and [e["i"] for e in entries if "event" not in e] == list(range(30))
    # Each file after the oldest opens with the rotation that closed the one before it: a
    # missing or edited file breaks the chain.
    for older, newer in zip(files, files[1:]):
        (first, *_), _ = audit.read(newer)
        assert first["event"] == "audit_rotated" and first["closed_sha256"] == provenance.sha256_file(older)


def test_deleting_old_audit_files_needs_the_setting_and_is_logged(tmp_path):
    log = audit.AuditLog(str(tmp_path), max_bytes=1000, backups=2, fsync=False, delete_old_files=True)
    for i in range(30):
        log.append({"i": i, "pad": "z" * 200})
    assert [os.path.basename(f) for f in log.files()] == ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
    entries, broken = audit.read(log.files())
    kept = [e["i"] for e in entries if "event" not in e]
    assert broken == 0 and kept[-1] == 29 and kept == sorted(kept)
    # The deletions still on disk are recorded with what they removed; every line not kept was in
    # a deleted file (or in a file whose deletion record was itself deleted later).
    deletions = [e for e in entries if e.get("event") == "audit_files_deleted"]
    assert deletions and all(d["setting"] == "audit.delete_old_files" for d in deletions)
    assert all(f["lines"] > 0 and len(f["sha256"]) == 64 for d in deletions for f in d["deleted"])


# ------------------------------------------------------------------------------------------
# Write, sign, log, then publish
# ------------------------------------------------------------------------------------------

publish = conftest.pack_module("engine.provenance.publish")


def quarantine_of(message):
    import re
    return os.path.dirname(re.search(r"kept as PNGs in (\S+frames) ", message).group(1))


def test_an_audit_append_failing_after_signing_publishes_nothing_and_keeps_everything(comfy_dirs, monkeypatch):
    def refuse(self, entry):
        raise PermissionError(1, "Operation not permitted", self.path)

    monkeypatch.setattr(audit.AuditLog, "append", refuse)
    with pytest.raises(ValueError) as err:
        call_node(save_labelled.SaveLabelledVideo, video=video_of(frames()), filename_prefix="q/v", format="auto",
                  codec="auto", identity=make_identity(valid_record()))
    message = str(err.value)
    assert message.startswith("Nothing was saved to output/: Writing the Stand-In audit log")
    assert "give it write permission" in message and "chattr" in message
    assert saved_files(comfy_dirs, ".mp4") == []
    folder = quarantine_of(message)
    assert len([n for n in os.listdir(os.path.join(folder, "frames")) if n.endswith(".png")]) == 9
    # The file was signed before the append failed: it is kept beside the frames, with its manifest.
    (kept,) = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".mp4")]
    assert provenance.verify(kept).ok
    assert "NOT a labelled output" in open(os.path.join(folder, "REASON.txt")).read()
    assert not os.listdir(os.path.join(comfy_dirs["state"], "staging"))


def test_a_manifest_over_the_limit_is_refused_with_what_to_shorten(comfy_dirs):
    prompt = {"5": {"class_type": "SomeNode", "inputs": {"note": "n" * 400_000}},
              "9": {"class_type": "StandIn_SaveLabelledImage", "inputs": {"images": ["5", 0]}}}
    with pytest.raises(ValueError) as err:
        call_node(save_labelled.SaveLabelledImage, prompt=prompt, images=frames(n=2), filename_prefix="big/p")
    message = str(err.value)
    assert "over the 256 KB the pack signs" in message and "shorten the long text" in message
    assert saved_files(comfy_dirs, ".png") == []
    assert len(os.listdir(os.path.join(quarantine_of(message), "frames"))) == 2


def test_publishing_never_overwrites_and_works_across_file_systems(tmp_path, monkeypatch):
    src, dst = tmp_path / "staged.mp4", tmp_path / "out" / "final.mp4"
    src.write_bytes(b"signed")
    publish.place(str(src), str(dst))
    assert dst.read_bytes() == b"signed" and not src.exists()
    src.write_bytes(b"second")
    with pytest.raises(FileExistsError):
        publish.place(str(src), str(dst))
    assert dst.read_bytes() == b"signed" and src.exists()
    import errno
    real_link = os.link

    def no_cross_device_link(a, b, **kw):
        if os.path.basename(str(a)) == "staged.mp4":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(a, b, **kw)

    monkeypatch.setattr(os, "link", no_cross_device_link)
    other = tmp_path / "out" / "other.mp4"
    publish.place(str(src), str(other))
    assert other.read_bytes() == b"second" and not src.exists()
    assert sorted(os.listdir(tmp_path / "out")) == ["final.mp4", "other.mp4"]  # no hidden copy left


def test_an_unreadable_policy_file_refuses_naming_the_fix(comfy_dirs, monkeypatch):
    """Permission denied (the tests run as root, who reads any file, so the refusal is simulated)."""
    policy_mod = conftest.pack_module("engine.provenance.policy")
    write_policy(comfy_dirs, require_consent=False)

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(policy_mod, "open", denied, raising=False)
    with pytest.raises(ValueError) as err:
        consent_record.enforce(make_identity(valid_record()))
    message = str(err.value)
    assert "policy.json cannot be read (Permission denied)" in message and "chmod 644" in message
    assert "refused until then" in message


def test_a_name_taken_at_publication_keeps_the_file_and_logs_where_it_went(comfy_dirs, monkeypatch):
    real_place = publish.place

    def taken(src, dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "wb").close()  # another process saved under the same name meanwhile
        return real_place(src, dst)

    monkeypatch.setattr(publish, "place", taken)
    with pytest.raises(ValueError) as err:
        call_node(save_labelled.SaveLabelledVideo, video=video_of(frames()), filename_prefix="race/v", format="auto",
                  codec="auto", identity=make_identity(valid_record()))
    message = str(err.value)
    assert "Placing the file in output/" in message and "run the save again" in message
    folder = quarantine_of(message)
    (kept,) = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".mp4")]
    assert provenance.verify(kept).ok
    entries, _ = audit_entries(comfy_dirs)
    line, event = entries[-2:]
    assert event["event"] == "publish_failed" and event["quarantine"] == folder
    assert event["files"][0]["sha256"] == line["outputs"][0]["sha256"] == provenance.sha256_file(kept)
    # The only file in output/ is the other process's, untouched.
    (other,) = saved_files(comfy_dirs, ".mp4")
    assert os.path.getsize(other) == 0


# ------------------------------------------------------------------------------------------
# Several people: a consent record per person, every reference in the manifest and audit line
# ------------------------------------------------------------------------------------------

def two_people(first=None, second=None):
    a = make_identity(first)
    image = torch.from_numpy(np.random.default_rng(4).random((1, 32, 32, 3)).astype(np.float32))
    b = objects.Identity(latent=torch.zeros(1, 16, 1, 4, 4), image=image, vae_kind="test", latent_channels=16,
                         detector="none", consent=second)
    regions = conftest.pack_module("engine.identity.regions")
    return objects.Identities((objects.Person(a, 1.0, regions.Region("left half")), objects.Person(b, 0.8, None)))


def test_several_people_each_need_consent_under_the_policy(comfy_dirs):
    write_policy(comfy_dirs, require_consent=True)
    # Refused before the model is touched (None here would fail on first use).
    with pytest.raises(ValueError, match=r"^Person 2: .*requires a consent record"):
        apply_identity.ApplyRSACPM.execute(None, None, two_people(valid_record()))
    with pytest.raises(ValueError, match=r"^Person 1: .*requires a consent record"):
        apply_identity.ApplyRSACPM.execute(None, None, two_people(None, valid_record()))
    expired = dataclasses.replace(valid_record(), valid_until=(TODAY - datetime.timedelta(days=1)).isoformat())
    with pytest.raises(ValueError, match=r"^Person 2: .*expired"):
        apply_identity.ApplyRSACPM.execute(None, None, two_people(valid_record(), expired))
    # A consent record belongs to one person, attached before combining.
    with pytest.raises(ValueError, match="one person"):
        consent_record.ConsentRecord.execute(two_people(), "Jane", "ad", (TODAY + datetime.timedelta(days=3)).isoformat(),
                                             "C-1", "")
    with pytest.raises(ValueError, match="expired"):
        call_node(save_labelled.SaveLabelledVideo, video=video_of(frames()), filename_prefix="e/v", format="auto",
                  codec="auto", identity=two_people(valid_record(), expired))


def test_labelled_save_lists_every_person_with_reference_and_consent(comfy_dirs):
    people = two_people(valid_record(), valid_record(subject="John Roe", document_id="CONTRACT-2026-18"))
    out = call_node(save_labelled.SaveLabelledVideo, prompt=graph("missing.safetensors"), unique_id="21",
                    video=video_of(frames()), filename_prefix="two/v", format="auto", codec="auto", identity=people)
    assert "Consent: Jane Doe" in out.args[0] and "Consent: John Roe" in out.args[0]
    (path,) = saved_files(comfy_dirs, ".mp4")
    report = provenance.verify(path)
    assert report.ok
    listed = report.generation["identities"]
    expected = [provenance.sha256_pixels(p.identity.image[0].numpy()) for p in people.people]
    assert [i["reference"]["sha256_rgb8"] for i in listed] == expected and expected[0] != expected[1]
    assert [i["consent"]["subject"] for i in listed] == ["Jane Doe", "John Roe"]
    assert [i["region"] for i in listed] == ["left half", "whole frame"] and listed[1]["strength"] == 0.8
    assert report.generation["reference"] is None and report.generation["consent"] is None
    (entry,), _ = audit_entries(comfy_dirs)
    assert entry["identities"] == listed
