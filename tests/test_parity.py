"""The port against the official implementation's own outputs (tests/fixtures, copied from the official code's runs)."""

import json
import os
import re
import shutil
import subprocess
import sys

import safetensors.torch
import torch

import check_parity
import conftest

HERE = os.path.dirname(os.path.abspath(__file__))
LINE = re.compile(r"^parity (\S+) (\S+): max_abs=(\S+) max_rel=(\S+) calls=(\d+) (ok|FAIL)$")


def check_matches(folder):
    with open(os.path.join(folder, "calls.json")) as f:
        spec = json.load(f)
    results = check_parity.check_folder(folder)
    assert [r[0] for r in results] == spec["adapters"]
    for adapter_file, cmp, n_calls in results:
        assert cmp.failures == [], adapter_file
        assert n_calls == len(spec["sequence"]) + len(spec.get("base", []))
        assert cmp.max_abs <= spec["tolerance"]["atol"]
    return spec


def test_fixture_matches_official_outputs_and_cached_kv(fixture_dir):
    check_matches(fixture_dir)


def test_two_identities_match_the_official_multi_baseline():
    """The official dev/multi branch's outputs with two references on one model (both adapter
    formats), and both references' per-block K/V in order."""
    spec = check_matches(conftest.MULTI_FIXTURE_DIR)
    assert len(spec["references"]) == 2


def _doctor(src, dst, key, delta):
    shutil.copytree(src, dst)
    path = os.path.join(dst, "expected.safetensors")
    os.chmod(dst, 0o755)
    os.chmod(path, 0o644)
    tensors = safetensors.torch.load_file(path)
    t = tensors[key].clone()
    t.view(-1)[7] += delta
    tensors[key] = t
    safetensors.torch.save_file(tensors, path)


def test_cli_prints_verdicts_and_fails_on_any_mismatch(fixture_dir, tmp_path):
    """One good folder and two with a single expected value moved by 1e-3: one output, one
    cached key. The good folder passes, each doctored one fails, the exit status is 1."""
    bad_out = str(tmp_path / "bad_output")
    bad_kv = str(tmp_path / "bad_kv")
    _doctor(fixture_dir, bad_out, "out_pos_t350_cached", 1e-3)
    _doctor(fixture_dir, bad_kv, "k_ip.block1", 1e-3)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "check_parity.py"), fixture_dir, bad_out, bad_kv],
                          capture_output=True, text=True, timeout=600)
    lines = [LINE.match(line) for line in proc.stdout.splitlines() if line.startswith("parity ")]
    assert all(lines), proc.stdout
    verdicts = {(os.path.basename(m.group(1)), m.group(2)): m.group(6) for m in lines}
    base = os.path.basename(fixture_dir)
    for adapter in ("standin_adapter.ckpt", "standin_adapter.safetensors"):
        assert verdicts[(base, adapter)] == "ok"
        assert verdicts[("bad_output", adapter)] == "FAIL"
        assert verdicts[("bad_kv", adapter)] == "FAIL"
    assert len(lines) == 6
    assert proc.returncode == 1
    assert "k block 1" in proc.stderr and "out_pos_t350_cached" in proc.stderr


def test_cli_default_folder_passes(fixture_dir):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "check_parity.py")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [LINE.match(line) for line in proc.stdout.splitlines() if line.startswith("parity ")]
    # one identity and two identities, each with both adapter formats
    assert len(lines) == 4 and all(m and m.group(6) == "ok" for m in lines), proc.stdout
    assert {os.path.basename(m.group(1)) for m in lines} == {"standin_parity", "standin_multi"}
    assert all(float(m.group(3)) <= 1e-4 for m in lines)


def test_base_calls_are_the_unpatched_model(fixture_dir):
    """The fixture's base output is reproduced by ComfyUI's Wan alone, and differs from the
    Stand-In output by far more than the tolerance (so the parity test can tell them apart)."""
    import wan_tiny
    model = wan_tiny.load_model(os.path.join(fixture_dir, "model.safetensors"))
    inputs = wan_tiny.fixture_inputs(fixture_dir)
    expected = safetensors.torch.load_file(os.path.join(fixture_dir, "expected.safetensors"))
    with torch.no_grad():
        out = model.model.diffusion_model(inputs["latents"], torch.tensor([700.0]), inputs["context_pos"])
    torch.testing.assert_close(out, expected["out_base_t700"], atol=1e-4, rtol=1e-4)
    assert (expected["out_pos_t700_first"] - expected["out_base_t700"]).abs().max() > 0.1
