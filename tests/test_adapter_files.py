"""Reading and validating Stand-In adapter files."""

import os
import pickle

import pytest
import safetensors.torch
import torch

from wan_tiny import random_adapter_sd


def _save_ckpt(path, obj):
    torch.save(obj, path)
    return str(path)


def test_official_ckpt_and_safetensors_give_identical_weights(fixture_dir, adapter_mod):
    a = adapter_mod.load_adapter_file(os.path.join(fixture_dir, "standin_adapter.ckpt"))
    b = adapter_mod.load_adapter_file(os.path.join(fixture_dir, "standin_adapter.safetensors"))
    assert (a.spec.num_blocks, a.spec.dim, a.spec.rank) == (2, 256, 128)
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb) and len(sa) == 12
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_state_dict_wrapper_and_diffusion_model_prefix(tmp_path, adapter_mod):
    sd = random_adapter_sd(3, 64, rank=8)
    wrapped = adapter_mod.load_adapter_file(_save_ckpt(tmp_path / "w.ckpt", {"state_dict": sd}))
    prefixed_sd = {"diffusion_model." + k: v for k, v in sd.items()}
    safetensors.torch.save_file(prefixed_sd, str(tmp_path / "p.safetensors"))
    prefixed = adapter_mod.load_adapter_file(str(tmp_path / "p.safetensors"))
    for m in (wrapped, prefixed):
        assert (m.spec.num_blocks, m.spec.dim, m.spec.rank) == (3, 64, 8)
        assert torch.equal(m.lora(2).v_loras.up.weight, sd["blocks.2.self_attn.v_loras.up.weight"])
    assert prefixed.spec.prefix == "diffusion_model."


def test_lora_computes_in_float32_like_the_official_layer(adapter_mod):
    sd = random_adapter_sd(1, 32, rank=4)
    ad = adapter_mod.StandInAdapter.from_state_dict(sd)
    x = torch.randn(2, 5, 32, dtype=torch.bfloat16)
    want = (x.float() @ sd["blocks.0.self_attn.q_loras.down.weight"].T
            @ sd["blocks.0.self_attn.q_loras.up.weight"].T).to(torch.bfloat16)
    got = ad.lora(0).q_loras(x)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want)


def test_pickle_with_code_is_refused_and_the_code_never_runs(tmp_path, adapter_mod):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    sd = random_adapter_sd(1, 16, rank=4)
    sd["payload"] = Exploit()
    with open(path, "wb") as f:
        torch.save(sd, f)
    assert not marker.exists()
    with pytest.raises(adapter_mod.AdapterError, match="refused: it contains Python objects other than tensors"):
        adapter_mod.load_adapter_file(str(path))
    assert not marker.exists()


def test_ckpt_holding_non_tensors_is_refused(tmp_path, adapter_mod):
    sd = random_adapter_sd(1, 16, rank=4)
    sd["epoch"] = 3
    with pytest.raises(adapter_mod.AdapterError, match=r"entries epoch are not tensors"):
        adapter_mod.load_adapter_file(_save_ckpt(tmp_path / "x.ckpt", sd))


def test_a_wan_model_file_is_not_an_adapter(fixture_dir, adapter_mod):
    with pytest.raises(adapter_mod.AdapterError, match=r"model\.safetensors is not a Stand-In adapter: none of its \d+ keys"):
        adapter_mod.load_adapter_file(os.path.join(fixture_dir, "model.safetensors"))


@pytest.mark.parametrize("case, message", [
    ("missing", r"incomplete: 1 of 18 tensors are missing \(blocks\.1\.self_attn\.k_loras\.up\.weight\)"),
    ("extra", r"keys that are not part of a Stand-In adapter: blocks\.0\.self_attn\.o_loras\.up\.weight"),
    ("rank", r"blocks\.2\.self_attn\.q_loras\.down\.weight has shape \[4, 32\], expected \[8, 32\] \(rank 8, width 32"),
    ("nan", r"blocks\.0\.self_attn\.v_loras\.down\.weight contains NaN or infinite values"),
    ("inf", r"blocks\.1\.self_attn\.q_loras\.up\.weight contains NaN or infinite values"),
    ("gap", r"incomplete: 6 of 24 tensors are missing \(blocks\.2\.self_attn\.q_loras\.down\.weight"),
])
def test_structure_errors_say_what_is_wrong(case, message, tmp_path, adapter_mod):
    sd = random_adapter_sd(3, 32, rank=8)
    if case == "missing":
        del sd["blocks.1.self_attn.k_loras.up.weight"]
    elif case == "extra":
        sd["blocks.0.self_attn.o_loras.up.weight"] = torch.zeros(32, 8)
    elif case == "rank":
        sd["blocks.2.self_attn.q_loras.down.weight"] = torch.zeros(4, 32)
    elif case == "nan":
        sd["blocks.0.self_attn.v_loras.down.weight"][1, 1] = float("nan")
    elif case == "inf":
        sd["blocks.1.self_attn.q_loras.up.weight"][0, 2] = float("-inf")
    elif case == "gap":
        sd.update({k.replace("blocks.2.", "blocks.3."): v for k, v in sd.items() if k.startswith("blocks.2.")})
        sd = {k: v for k, v in sd.items() if not k.startswith("blocks.2.")}
    safetensors.torch.save_file(sd, str(tmp_path / "a.safetensors"))
    with pytest.raises(adapter_mod.AdapterError, match=message):
        adapter_mod.load_adapter_file(str(tmp_path / "a.safetensors"))


def test_damaged_files(tmp_path, adapter_mod, fixture_dir):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(adapter_mod.AdapterError, match="is empty"):
        adapter_mod.load_adapter_file(str(empty))
    with open(os.path.join(fixture_dir, "standin_adapter.safetensors"), "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(adapter_mod.AdapterError, match="not a readable safetensors file"):
        adapter_mod.load_adapter_file(str(cut))
    with open(os.path.join(fixture_dir, "standin_adapter.ckpt"), "rb") as f:
        data = f.read()
    cut_ckpt = tmp_path / "cut.ckpt"
    cut_ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(adapter_mod.AdapterError, match="could not be read as a PyTorch checkpoint"):
        adapter_mod.load_adapter_file(str(cut_ckpt))
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(adapter_mod.AdapterError):
        adapter_mod.load_adapter_file(str(noise))
    pickled_list = tmp_path / "list.pt"
    with open(pickled_list, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(adapter_mod.AdapterError):
        adapter_mod.load_adapter_file(str(pickled_list))
