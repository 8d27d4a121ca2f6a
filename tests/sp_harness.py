"""Sequence parallelism on CPU processes (gloo), for the tests: xfuser's attention, and a
stand-in for what Raylight does around ComfyUI's Wan model.

Test harness only. What it changes, and why, all inside the test processes:

* xfuser's attention classes exist only when ``torch.cuda.is_available()`` at import, and
  ``import xfuser`` pulls its diffusers pipelines; the attention modules are loaded alone here,
  under stub parent packages, with ``is_available`` answering True for the duration of the import.
* yunchang's TORCH_MATH kernel returns a zero log-sum-exp: exact for Ulysses (one kernel call),
  wrong for ring attention, which merges partial results by their log-sum-exp. The ring module
  gets a math kernel that returns the true one.
* process groups come from yunchang's ``set_seq_parallel_pg`` over a gloo world, not xfuser's
  helpers (which pick cuda/nccl from a CUDA build of torch).
* Raylight's ``usp_dit_forward`` (split the video tokens and the RoPE table over the ranks before
  the blocks, gather after) is played by ``("double_block", i)`` patches installed before the
  Stand-In patch, so ComfyUI's own forward runs; its ``usp_self_attn_forward`` by ComfyUI's own
  self-attention with an override that calls xfuser.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.distributed as dist


@contextlib.contextmanager
def _cuda_reported_available():
    original = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        yield
    finally:
        torch.cuda.is_available = original


def _package(name: str, path: Path):
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        module.__package__ = name
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    return module


def math_attention_with_lse(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **_):
    """[b, s, h, d] attention in float64 with its log-sum-exp [b, h, s], as flash attention returns."""
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    logits = torch.einsum("bshd,bthd->bhst", q.double(), k.double()) * scale
    lse = torch.logsumexp(logits, dim=-1)
    out = torch.einsum("bhst,bthd->bshd", torch.softmax(logits, dim=-1), v.double())
    return out.to(q.dtype), lse.float()


def load_xfuser_attention():
    """xfuser's ``xFuserLongContextAttention`` class, usable on CPU."""
    existing = sys.modules.get("xfuser.core.long_ctx_attention.hybrid.attn_layer")
    if existing is not None:
        return existing.xFuserLongContextAttention
    spec = importlib.util.find_spec("xfuser")
    if spec is None:
        raise SystemExit("xfuser is not installed: pip install -r requirements-test.txt")
    root = Path(next(iter(spec.submodule_search_locations)))
    _package("xfuser", root)
    _package("xfuser.core", root / "core")
    lca = _package("xfuser.core.long_ctx_attention", root / "core" / "long_ctx_attention")
    _package("xfuser.core.long_ctx_attention.hybrid", root / "core" / "long_ctx_attention" / "hybrid")
    ring_pkg = _package("xfuser.core.long_ctx_attention.ring", root / "core" / "long_ctx_attention" / "ring")
    distributed = _package("xfuser.core.distributed", root / "core" / "distributed")
    _package("xfuser.core.cache_manager", root / "core" / "cache_manager")

    envs = types.ModuleType("xfuser.envs")
    envs._is_npu = lambda: False
    sys.modules["xfuser.envs"] = envs
    sys.modules["xfuser"].envs = envs

    def ring_world_size():
        from yunchang.globals import PROCESS_GROUP
        return dist.get_world_size(PROCESS_GROUP.RING_PG)

    distributed.get_ring_parallel_world_size = ring_world_size
    runtime_state = types.ModuleType("xfuser.core.distributed.runtime_state")
    runtime_state.runtime_state_is_initialized = lambda: False
    sys.modules[runtime_state.__name__] = runtime_state

    with _cuda_reported_available():
        attn_layer = importlib.import_module("xfuser.core.long_ctx_attention.hybrid.attn_layer")
        lca.xFuserLongContextAttention = attn_layer.xFuserLongContextAttention
        ring = importlib.import_module("xfuser.core.long_ctx_attention.ring.ring_flash_attn")
    ring_pkg.xdit_ring_flash_attn_func = ring.xdit_ring_flash_attn_func
    ring.select_flash_attn_impl = lambda *args, **kwargs: math_attention_with_lse
    return attn_layer.xFuserLongContextAttention


def init_sequence_parallel(rank: int, world_size: int, init_file: str):
    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                world_size=world_size)


def set_degrees(ulysses: int, ring: int):
    """yunchang's Ulysses and ring process groups over the gloo world (ulysses x ring ranks)."""
    from yunchang import set_seq_parallel_pg
    set_seq_parallel_pg(ulysses, ring, dist.get_rank(), dist.get_world_size())


def make_attention(attention_class):
    from yunchang.kernels import AttnType
    return attention_class(attn_type=AttnType.TORCH_MATH)


class SplitSequence:
    """``("double_block", i)`` patch playing Raylight's usp_dit_forward: block 0 takes this rank's
    slice of the video tokens, every block this rank's slice of the RoPE table, the last block's
    output is gathered from all ranks."""

    def __init__(self, index: int, last: int):
        self.index, self.last = index, last

    def __call__(self, args, extra):
        world, rank = dist.get_world_size(), dist.get_rank()
        img, pe = args["img"], args["pe"]
        if img.shape[1] % world:
            raise SystemExit(f"{img.shape[1]} video tokens do not split over {world} ranks")
        if self.index == 0:
            img = img.chunk(world, dim=1)[rank]
        pe = pe.chunk(world, dim=1)[rank]
        out = extra["original_block"]({**args, "img": img, "pe": pe})
        if self.index == self.last:
            parts = [torch.empty_like(out["img"]) for _ in range(world)]
            dist.all_gather(parts, out["img"].contiguous())
            out = {**out, "img": torch.cat(parts, dim=1)}
        return out


def plain_sequence_parallel_forward(module, attention):
    """Raylight's usp_self_attn_forward in effect: ComfyUI's own self-attention, its attention
    call going to xfuser over all ranks' tokens."""

    def xfuser_attention(func, q, k, v, heads, *args, **kwargs):
        b, s, inner = q.shape
        d = inner // heads
        out = attention(None, q.view(b, s, heads, d), k.view(b, s, heads, d), v.view(b, s, heads, d))
        return out.reshape(b, s, inner)

    def forward(x, freqs, transformer_options={}, **kwargs):
        to = dict(transformer_options)
        to["optimized_attention_override"] = xfuser_attention
        return type(module).forward(module, x, freqs, transformer_options=to, **kwargs)

    return forward


def append_locally_forward(sequence_parallel_module):
    """The wrong way, as a control: the reference keys/values appended to each rank's own keys
    before xfuser's attention, so every reference key counts once per rank."""

    class AppendLocally(sequence_parallel_module.SelfAttentionForward):
        def __call__(self, x, freqs, transformer_options={}, **kwargs):
            ref = sequence_parallel_module.take_block_reference(transformer_options)
            if ref is None:
                return self.inner(x, freqs, transformer_options=transformer_options, **kwargs)
            k_ref, v_ref = ref
            attention = self.attention

            def local(func, q, k, v, heads, *args, **kw):
                b, s, inner = q.shape
                d = inner // heads
                k = torch.cat((k, k_ref.expand(b, -1, -1)), dim=1)
                v = torch.cat((v, v_ref.expand(b, -1, -1)), dim=1)
                out = attention(None, q.view(b, s, heads, d), k.reshape(b, -1, heads, d),
                                v.reshape(b, -1, heads, d))
                return out.reshape(b, s, inner)

            to = dict(transformer_options)
            to["optimized_attention_override"] = local
            return type(self.module).forward(self.module, x, freqs, transformer_options=to, **kwargs)

    return AppendLocally


def make_sequence_parallel(model, attention, sequence_parallel_module, forward_class=None):
    """A clone of ``model`` whose forward runs sharded over the ranks, as under Raylight; the
    self-attention forwards are the engine's SelfAttentionForward (or ``forward_class``) over
    the plain xfuser one."""
    forward_class = forward_class or sequence_parallel_module.SelfAttentionForward
    dm = model.model.diffusion_model
    last = len(dm.blocks) - 1
    sp = model.clone()
    for i, block in enumerate(dm.blocks):
        sp.set_model_patch_replace(SplitSequence(i, last), "dit", "double_block", i)
        sa = block.self_attn
        sa.forward = forward_class(sa, plain_sequence_parallel_forward(sa, attention), attention)
    return sp
