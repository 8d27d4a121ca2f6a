"""Stand-In on ComfyUI's native Wan DiT: the identity branch, RSA, CPM and the reference K/V cache.

The video tokens run through ComfyUI's own Wan blocks, unchanged: every weight op, fused
kernel, attention backend and patch that ComfyUI or another node puts into a block still
applies. The identity enters at one place only, the self-attention call, through extension
points that exist in every ComfyUI from 0.3.75 to 0.33:

* ``OUTER_SAMPLE`` wrapper: opens a per-generation cache in the run's own
  ``transformer_options`` (a copy ComfyUI makes for every sampling run) and empties it
  when sampling ends, however it ends.
* ``APPLY_MODEL`` wrapper (outside the diffusion model, so outside anything torch.compile
  traces): on every model call, decides whether the identity acts (strength, sigma window),
  finds or builds the reference keys/values for this video grid, and hands them to the
  forward through a per-call copy of ``transformer_options``, together with an
  ``optimized_attention_override`` that chains any override already set.
* ``("dit", ("double_block", i))`` block replacements that only mark block *i* as entered
  and call the original block; the override then gives that block's self-attention
  [video keys; reference keys] under one softmax (Restricted Self-Attention). A replacement
  another node installed before us is chained, not dropped.

The reference stream itself never runs inside the video forward: reference queries only
ever attend to reference keys and the reference tokens skip cross-attention, so their
keys/values depend on nothing but the weights, the adapter, the reference and (keys only,
through RoPE) the video grid. They are computed in one pass over the blocks at the first
call of a generation and reused for every step, for cond and uncond and any batch size.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import math
from dataclasses import dataclass

import torch

import comfy.ldm.common_dit
import comfy.ldm.modules.attention
import comfy.ldm.wan.model as wan_model
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension

from .adapter import StandInAdapter, describe_size
from .regions import Region, query_groups

log = logging.getLogger(__name__)

KEY = "standin"                      # wrapper key on the ModelPatcher
RUN_KEY = "standin_run"              # per-generation cache, in the run's transformer_options
CALL_KEY = "standin_call"            # per-call state, in the call's transformer_options
LATENT_CHANNELS = 16                 # Wan 2.1 VAE latents (also used by Wan 2.2 A14B)


class StandInError(ValueError):
    """Bad input to the Stand-In patch; the message names the problem and the fix."""


# --------------------------------------------------------------------------------------
# What we accept
# --------------------------------------------------------------------------------------

def _wan_block_classes():
    return (wan_model.WanAttentionBlock,)


def wan_diffusion_model(model) -> torch.nn.Module:
    """Return the Wan DiT of a ComfyUI MODEL, or explain why this MODEL cannot take Stand-In."""
    base = getattr(model, "model", None)
    dm = getattr(base, "diffusion_model", None)
    if dm is None or not isinstance(dm, wan_model.WanModel):
        kind = type(dm).__name__ if dm is not None else type(model).__name__
        raise StandInError(
            f"Stand-In needs a Wan 2.1 / 2.2 text-to-video model, but this MODEL is a {kind}. "
            f"Load a Wan T2V diffusion model (e.g. wan2.1_t2v_14B_*.safetensors) with "
            f"'Load Diffusion Model' and connect that.")
    if type(dm) not in (wan_model.WanModel, wan_model.VaceWanModel):
        raise StandInError(
            f"Stand-In works with Wan text-to-video models (plain T2V or VACE); this is a "
            f"{type(dm).__name__}, whose blocks it cannot patch. Use a Wan T2V or VACE model.")
    if getattr(dm, "model_type", "t2v") != "t2v":
        raise StandInError(
            "Stand-In works with Wan text-to-video models; this is an image-to-video model "
            f"(model_type '{dm.model_type}'). Use a Wan T2V or VACE model.")
    if not all(type(b) in _wan_block_classes() for b in dm.blocks):
        raise StandInError("This Wan model has blocks of an unknown kind; Stand-In cannot patch it.")
    in_channels = dm.patch_embedding.weight.shape[1]
    if in_channels != LATENT_CHANNELS:
        raise StandInError(
            f"This Wan model takes {in_channels}-channel latents, so it is not a text-to-video "
            f"model with the Wan 2.1 VAE (16 channels): image-to-video and Wan 2.2 5B models are "
            f"not supported by Stand-In. Use a Wan T2V 14B / A14B or VACE model.")
    return dm


def check_adapter_fits(dm, adapter: StandInAdapter) -> None:
    spec = adapter.spec
    blocks, dim = len(dm.blocks), dm.dim
    if (spec.num_blocks, spec.dim) != (blocks, dim):
        raise StandInError(
            f"This Stand-In adapter was made for a Wan model with {describe_size(spec.num_blocks, spec.dim)}, "
            f"but the connected model has {describe_size(blocks, dim)}. Use the adapter file made "
            f"for this model (for Wan 2.2 A14B: the _high file on the high-noise model and the "
            f"_low file on the low-noise model).")


def check_reference(dm, reference: torch.Tensor) -> torch.Tensor:
    """Validate a reference latent (model space, [1, 16, 1, h, w] or [1, 16, h, w])."""
    if not isinstance(reference, torch.Tensor):
        raise StandInError("The reference must be a latent tensor from 'Encode Reference Face'.")
    ref = reference
    if ref.ndim == 4:
        ref = ref.unsqueeze(2)
    if ref.ndim != 5:
        raise StandInError(f"The reference latent has shape {list(reference.shape)}; expected "
                           f"[1, 16, 1, h, w] (one image encoded by the Wan VAE).")
    if ref.shape[1] != LATENT_CHANNELS:
        hint = " (the Wan 2.2 5B VAE makes 48-channel latents)" if ref.shape[1] == 48 else ""
        raise StandInError(
            f"The reference latent has {ref.shape[1]} channels{hint}, but this Wan model takes "
            f"{LATENT_CHANNELS}-channel latents from the Wan 2.1 VAE. Encode the reference with "
            f"the Wan 2.1 VAE (wan_2.1_vae.safetensors), which Wan 2.1 14B and Wan 2.2 A14B use.")
    if ref.shape[0] != 1:
        raise StandInError(f"The reference latent holds {ref.shape[0]} images; Stand-In takes one "
                           f"reference per model. Pick one image (e.g. with 'Image From Batch').")
    if ref.shape[2] != 1:
        raise StandInError(f"The reference latent has {ref.shape[2]} frames; a reference is one "
                           f"still image encoded as a single latent frame.")
    if not torch.isfinite(ref).all():
        raise StandInError("The reference latent contains NaN or infinite values; re-encode the "
                           "reference image.")
    return ref.detach().to(device="cpu", dtype=torch.float32).contiguous()


# --------------------------------------------------------------------------------------
# Numerics shared by the reference pass and the video blocks
# --------------------------------------------------------------------------------------

def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of x [b, s, heads, head_dim] by ComfyUI's rope table."""
    x_ = x.to(freqs.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    rot = freqs[..., 0] * x_[..., 0]
    rot.addcmul_(freqs[..., 1], x_[..., 1])
    return rot.reshape(*x.shape).type_as(x)


def _repeat_rows(e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-frame modulation rows repeated over their tokens (as Wan does for TI2V timesteps)."""
    if e.size(1) <= 1:
        return e
    repeats = x.size(1) // e.size(1)
    if repeats * e.size(1) == x.size(1):
        return torch.repeat_interleave(e, repeats, dim=1)
    return torch.repeat_interleave(e, repeats + 1, dim=1)[:, :x.size(1)]


def block_modulation(block, e: torch.Tensor, x: torch.Tensor):
    mod = comfy.model_management.cast_to(block.modulation, dtype=x.dtype, device=x.device)
    if e.ndim < 4:
        return [_repeat_rows(m, x) for m in (mod + e).chunk(6, dim=1)]
    return [_repeat_rows(m, x) for m in (mod.unsqueeze(0) + e).unbind(2)]


@functools.lru_cache(maxsize=None)
def _takes_transformer_options(fn) -> bool:
    """ComfyUI's attention functions take transformer_options since 0.3.6x; older ones
    would raise on the keyword."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "transformer_options" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def attention(q, k, v, heads, transformer_options, mask=None):
    # Looked up at call time: whatever attention Wan itself uses right now (the user's
    # backend, or another node's replacement) is what Stand-In uses. An additive mask
    # (identity strength other than 0 and 1) is not honoured by every backend (sage attention
    # ignores it), so that one case goes through PyTorch's SDPA, which does.
    fn = wan_model.optimized_attention if mask is None else comfy.ldm.modules.attention.attention_pytorch
    kwargs = {"transformer_options": transformer_options} if _takes_transformer_options(fn) else {}
    if mask is not None:
        kwargs["mask"] = mask
    return fn(q, k, v, heads, **kwargs)


def reference_rope(dm, grid_h: int, grid_w: int, ref_h: int, ref_w: int, device, offset: int = 0) -> torch.Tensor:
    """Conditional Position Mapping: reference token (i, j) sits at (t=-1, h=H+offset+i,
    w=W+offset+j). One reference has offset 0; with several, the official dev/multi branch
    advances one offset by each reference's patch-grid height on both axes, so no two
    references share a position."""
    ids = torch.zeros((1, ref_h, ref_w, 3), device=device, dtype=torch.float32)
    ids[..., 0] = -1.0
    top, left = grid_h + offset, grid_w + offset
    ids[..., 1] += torch.arange(top, top + ref_h, device=device, dtype=torch.float32).view(1, -1, 1)
    ids[..., 2] += torch.arange(left, left + ref_w, device=device, dtype=torch.float32).view(1, 1, -1)
    return dm.rope_embedder(ids.reshape(1, -1, 3)).movedim(1, 2)


def video_grid(dm, x: torch.Tensor) -> tuple[int, int]:
    """The video's patch grid (H, W), as the DiT sees it after padding to the patch size."""
    ph, pw = dm.patch_size[1], dm.patch_size[2]
    return -(-x.shape[-2] // ph), -(-x.shape[-1] // pw)


# --------------------------------------------------------------------------------------
# The reference pass: every block, timestep 0, self-attention over reference tokens only
# --------------------------------------------------------------------------------------

@dataclass
class ReferenceKV:
    keys: list            # per block [1, L_ref, dim], after norm_k and RoPE
    values: list          # per block [1, L_ref, dim]
    tokens: int
    spans: tuple = ()     # per identity (start, stop) along the token axis, in order

    def __post_init__(self):
        if not self.spans:
            self.spans = ((0, self.tokens),)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def to(self, device) -> "ReferenceKV":
        return ReferenceKV([k.to(device) for k in self.keys], [v.to(device) for v in self.values],
                           self.tokens, self.spans)


def reference_grid(dm, reference: torch.Tensor) -> tuple[int, int]:
    """The reference's patch grid (h, w), after padding to the patch size."""
    ph, pw = dm.patch_size[1], dm.patch_size[2]
    return -(-reference.shape[-2] // ph), -(-reference.shape[-1] // pw)


def reference_offsets(dm, references) -> list[int]:
    """CPM offset of each reference: the official dev/multi loop adds each reference's grid
    height to one offset used on both axes. References of different sizes are placed by the
    same rule (rows never overlap, so no two references share a position)."""
    offsets, offset = [], 0
    for ref in references:
        offsets.append(offset)
        offset += reference_grid(dm, ref)[0]
    return offsets


@torch.no_grad()
def build_reference_kv(dm, adapter: StandInAdapter, reference: torch.Tensor, grid_hw, dtype,
                       device, transformer_options=None, offset: int = 0) -> ReferenceKV:
    """Run the reference tokens through every block and collect each block's keys/values."""
    transformer_options = transformer_options or {}
    ref = comfy.ldm.common_dit.pad_to_patch_size(reference.to(device), dm.patch_size)
    x = dm.patch_embedding(ref.float()).to(dtype)
    ref_h, ref_w = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)                                   # [1, L_ref, dim]
    b, n_tok = x.shape[:2]

    # Timestep 0 modulation, the reference stream's own.
    t0 = torch.zeros((1,), device=device, dtype=torch.float32)
    e = dm.time_embedding(wan_model.sinusoidal_embedding_1d(dm.freq_dim, t0).to(dtype=dtype))
    e0 = dm.time_projection(e).unflatten(1, (6, dm.dim))               # [1, 6, dim]
    freqs = reference_rope(dm, grid_hw[0], grid_hw[1], ref_h, ref_w, device, offset)

    keys, values = [], []
    last = len(dm.blocks) - 1
    for i, block in enumerate(dm.blocks):
        sa = block.self_attn
        lora = adapter.lora(i)
        n, d = sa.num_heads, sa.head_dim
        m = block_modulation(block, e0, x)
        y = torch.addcmul(m[0], block.norm1(x), 1 + m[1])
        q = sa.norm_q(sa.q(y) + lora.q_loras(y))
        k = sa.norm_k(sa.k(y) + lora.k_loras(y))
        v = sa.v(y) + lora.v_loras(y)
        q = apply_rope(q.view(b, n_tok, n, d), freqs).view(b, n_tok, n * d)
        k = apply_rope(k.view(b, n_tok, n, d), freqs).view(b, n_tok, n * d)
        keys.append(k)
        values.append(v)
        if i == last:
            break  # the last block's reference output feeds nothing
        out = sa.o(attention(q, k, v, n, transformer_options))
        x = torch.addcmul(x, out, m[2])
        y = block.ffn(torch.addcmul(m[3], block.norm2(x), 1 + m[4]))
        x = torch.addcmul(x, y, m[5])
    return ReferenceKV(keys, values, n_tok)


@torch.no_grad()
def build_identities_kv(dm, adapter: StandInAdapter, references, offsets, grid_hw, dtype, device,
                        transformer_options=None) -> ReferenceKV:
    """Keys/values of several references, each run through the blocks on its own (its tokens
    attend only to themselves), concatenated per block in order: N x the memory of one. Each
    reference's tensors are copied into the joint buffers and dropped before the next is built,
    so building costs at most one reference more than the result."""
    if len(references) == 1:
        return build_reference_kv(dm, adapter, references[0], grid_hw, dtype, device,
                                  transformer_options, offsets[0])
    sizes = [h * w for h, w in (reference_grid(dm, r) for r in references)]
    total = sum(sizes)
    keys = values = None
    spans, start = [], 0
    for ref, offset, size in zip(references, offsets, sizes):
        one = build_reference_kv(dm, adapter, ref, grid_hw, dtype, device, transformer_options, offset)
        if keys is None:
            keys = [k.new_empty((k.shape[0], total, k.shape[2])) for k in one.keys]
            values = [v.new_empty((v.shape[0], total, v.shape[2])) for v in one.values]
        for i in range(len(keys)):
            keys[i][:, start:start + size] = one.keys[i]
            values[i][:, start:start + size] = one.values[i]
        spans.append((start, start + size))
        start += size
        del one
    return ReferenceKV(keys, values, total, tuple(spans))


# --------------------------------------------------------------------------------------
# The video stream: ComfyUI's own Wan block; the reference joins its self-attention call
# --------------------------------------------------------------------------------------

def _extend_mask(mask, keys_before: int, extra: int, key_bias, like: torch.Tensor):
    """The attention mask for [video keys; reference keys]: an existing mask gets zero logits
    for the reference keys; strength != 1 adds log(strength) to them. ``key_bias`` is None,
    one number for every reference key, or a tuple of (tokens, bias or None) per identity."""
    if isinstance(key_bias, tuple):
        if all(b is None for _, b in key_bias):
            key_bias = None
        elif len({b for _, b in key_bias}) == 1:
            key_bias = key_bias[0][1]
    if mask is None and key_bias is None:
        return None
    if mask is None:
        mask = torch.zeros((1, 1, 1, keys_before), device=like.device, dtype=like.dtype)
    if isinstance(key_bias, tuple):
        tail = torch.cat([torch.full((*mask.shape[:-1], n), 0.0 if b is None else b,
                                     device=mask.device, dtype=mask.dtype) for n, b in key_bias], dim=-1)
    else:
        tail = torch.full((*mask.shape[:-1], extra), 0.0 if key_bias is None else key_bias,
                          device=mask.device, dtype=mask.dtype)
    return torch.cat((mask, tail), dim=-1)


def _grouped_attention(call, func, q, k, v, k_ref, v_ref, heads, seq_dim, args, kwargs):
    """Self-attention with regions: each group of video queries attends to [video; the
    references its region lets it see], with the attention function it would have used.
    A query never meets the keys of a reference outside its region, so its output is
    independent of that reference bit for bit; no [queries x keys] mask is ever built."""
    out_dim = 2 if kwargs.get("skip_output_reshape", False) else 1
    n_queries = q.shape[seq_dim]
    if n_queries != call.grid_tokens:
        raise StandInError(
            f"Identity regions need the self-attention to see exactly the video's {call.grid_tokens} "
            f"tokens, but it sees {n_queries} (another node adds tokens to the sequence). Remove "
            f"the regions (whole frame, no mask) or that node.")
    mask_in = kwargs.get("mask")
    keys_before = k.shape[seq_dim]
    out = None
    for group in call.groups:
        qg = q.index_select(seq_dim, group.index)
        spans = [call.kv.spans[a] for a in group.allowed]
        kg = torch.cat([k] + [k_ref.narrow(seq_dim, s, e - s) for s, e in spans], dim=seq_dim)
        vg = torch.cat([v] + [v_ref.narrow(seq_dim, s, e - s) for s, e in spans], dim=seq_dim)
        bias = tuple((e - s, call.biases[a]) for a, (s, e) in zip(group.allowed, spans))
        m = mask_in
        if m is not None and m.ndim >= 2 and m.shape[-2] == n_queries and n_queries > 1:
            m = m.index_select(m.ndim - 2, group.index.to(m.device))
        m = _extend_mask(m, keys_before, kg.shape[seq_dim] - keys_before, bias if spans else None, q)
        kw = dict(kwargs)
        f = func
        if m is not None:
            kw["mask"] = m
            f = comfy.ldm.modules.attention.attention_pytorch
        if call.previous_override is not None:
            og = call.previous_override(f, qg, kg, vg, heads, *args, **kw)
        else:
            og = f(qg, kg, vg, heads, *args, **kw)
        if out is None:
            shape = list(og.shape)
            shape[out_dim] = n_queries
            out = og.new_empty(shape)
        out.index_copy_(out_dim, group.index.to(og.device), og)
    return out


def standin_attention(func, q, k, v, heads, *args, **kwargs):
    """``optimized_attention_override`` installed for the model calls in which the identity acts.

    Every attention call of the forward comes through here. The first one with as many keys as
    queries after a Wan block was entered (``CallState.pending``) is that block's
    self-attention: its video keys/values are joined by the block's reference keys/values
    (Restricted Self-Attention: one softmax over [video; reference]). Every other call
    (cross-attention, VACE blocks, other patches) passes through unchanged. An override that
    was already set (by another node) is chained: it receives the joined keys.
    """
    call = kwargs["transformer_options"][CALL_KEY]
    call.attention_calls += 1
    index = call.pending
    seq_dim = 2 if kwargs.get("skip_reshape", False) else 1
    if index is not None and k.shape[seq_dim] == q.shape[seq_dim]:
        call.pending = None
        call.blocks_used.add(index)
        k_ref = call.kv.keys[index].to(device=k.device, dtype=k.dtype, non_blocking=True)
        v_ref = call.kv.values[index].to(device=v.device, dtype=v.dtype, non_blocking=True)
        b = k.shape[0]
        if seq_dim == 2:   # [b, heads, tokens, head_dim]
            k_ref = k_ref.view(1, -1, heads, k.shape[-1]).transpose(1, 2)
            v_ref = v_ref.view(1, -1, heads, v.shape[-1]).transpose(1, 2)
        if call.groups is not None:
            return _grouped_attention(call, func, q, k, v, k_ref.expand(b, *k_ref.shape[1:]),
                                      v_ref.expand(b, *v_ref.shape[1:]), heads, seq_dim, args, kwargs)
        keys_before = k.shape[seq_dim]
        k = torch.cat((k, k_ref.expand(b, *k_ref.shape[1:])), dim=seq_dim)
        v = torch.cat((v, v_ref.expand(b, *v_ref.shape[1:])), dim=seq_dim)
        mask = _extend_mask(kwargs.get("mask"), keys_before, k_ref.shape[seq_dim], call.key_bias, q)
        if mask is not None:
            kwargs["mask"] = mask
            # Not every backend honours a mask (sage attention ignores it): PyTorch's SDPA does.
            func = comfy.ldm.modules.attention.attention_pytorch
    if call.previous_override is not None:
        return call.previous_override(func, q, k, v, heads, *args, **kwargs)
    return func(q, k, v, heads, *args, **kwargs)


# --------------------------------------------------------------------------------------
# Per-generation and per-call state
# --------------------------------------------------------------------------------------

class RunCache:
    """Reference K/V of one generation, keyed by everything they depend on besides the
    patch itself: the DiT, the video grid, dtype, device, and the weight hooks in force."""

    def __init__(self, owner: "StandInPatch", model_patcher=None, window=None):
        self.owner = owner
        self.model_patcher = model_patcher
        self.window = window          # (sigma_start, sigma_end), or None: always active
        self.entries: dict = {}
        self.group_entries: dict = {}
        self.builds = 0
        self.warned_blocks = False

    def _hooks_key(self):
        hooks = getattr(self.model_patcher, "current_hooks", None)
        return id(hooks) if hooks is not None else None

    def get(self, dm, grid_hw, dtype, device, transformer_options) -> ReferenceKV:
        key = (id(dm), grid_hw, dtype, str(device), self._hooks_key())
        kv = self.entries.get(key)
        if kv is None:
            kv = self.owner.build(dm, grid_hw, dtype, device, transformer_options)
            self.entries[key] = kv
            self.builds += 1
        return kv

    def groups(self, frame_index, grid_hw, device):
        """The region query groups for these video frames (None: no regions), made once per
        grid and window in a generation."""
        key = (tuple(frame_index), grid_hw, str(device))
        if key not in self.group_entries:
            self.group_entries[key] = self.owner.query_groups(frame_index, grid_hw, device)
        return self.group_entries[key]

    def clear(self):
        self.entries.clear()
        self.group_entries.clear()


class CallState:
    """What one model call needs inside the forward; lives in that call's transformer_options.

    Only plain attribute reads and writes happen on it inside the forward, so a compiled
    diffusion model traces through it without breaking its graph.
    """

    def __init__(self, kv: ReferenceKV, key_bias, previous_override, groups=None, biases=(),
                 grid_tokens=0):
        self.kv = kv
        self.key_bias = key_bias          # ungrouped path: None, one number, or per identity
        self.previous_override = previous_override
        self.groups = groups              # regions: QueryGroup per set of visible identities
        self.biases = biases              # per identity in the cache: log(strength) or None
        self.grid_tokens = grid_tokens
        self.pending = None            # block index whose self-attention is next
        self.blocks_entered = set()
        self.blocks_used = set()
        self.attention_calls = 0


def _frame_index(transformer_options, frames: int) -> tuple:
    """Latent frame numbers of this call's video frames: a context window names the frames it
    took (so per-frame regions follow the window); otherwise 0 .. frames-1."""
    window = transformer_options.get("context_window")
    index = getattr(window, "index_list", None)
    if index is not None and len(index) == frames and getattr(window, "dim", 2) == 2:
        return tuple(int(i) for i in index)
    return tuple(range(frames))


def compute_dtype(base_model) -> torch.dtype:
    """The dtype ComfyUI casts the latents to before the diffusion model sees them."""
    get_inference = getattr(base_model, "get_dtype_inference", None)   # ComfyUI 0.4+
    if get_inference is not None:
        return get_inference()
    return base_model.manual_cast_dtype or base_model.get_dtype()


def _within(value: float, low: float, high: float) -> bool:
    # The sampler's sigmas are float32 and percent_to_sigma is float64 arithmetic: a step that
    # sits exactly on a boundary can land an ulp outside. Adjacent steps are far more than
    # 1e-5 apart (1000 training timesteps), so this tolerance keeps exactly the boundary steps.
    tol = 1e-5
    return low - tol * abs(low) <= value <= high + tol * abs(high)


# --------------------------------------------------------------------------------------
# The patch
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class IdentitySpec:
    """One person on a model: the reference latent (model space, [1, 16, 1, h, w]), how
    strongly the video attends to it, and optionally where in the video it may act."""
    reference: torch.Tensor
    strength: float = 1.0
    region: Region | None = None


class StandInPatch:
    """One or more identities on one model (one adapter): references, strengths, regions,
    sigma window.

    Immutable once built and shared by every clone of the patched MODEL (deepcopy returns
    the same object): it carries no per-run state; that lives in the run's transformer
    options and dies with the run.
    """

    def __init__(self, adapter: StandInAdapter, adapter_patcher, reference,
                 strength: float = 1.0, start_percent: float = 0.0, end_percent: float = 1.0,
                 cache_on_cpu: bool = False):
        self.adapter = adapter
        self.adapter_patcher = adapter_patcher
        if isinstance(reference, torch.Tensor):
            reference = (IdentitySpec(reference),)
        self.identities = tuple(reference)
        self.reference = self.identities[0].reference
        self.strength = float(strength)
        # The node's strength scales every identity's own (1.0 * s is s exactly).
        self.strengths = tuple(self.strength * float(i.strength) for i in self.identities)
        self.acting = tuple(j for j, s in enumerate(self.strengths) if s > 0.0)
        self.start_percent = float(start_percent)
        self.end_percent = float(end_percent)
        self.cache_on_cpu = bool(cache_on_cpu)

    def __deepcopy__(self, memo):
        return self

    def models(self):
        """The adapter's ModelPatcher, for ComfyUI to load with the model (via the block patches)."""
        return [self.adapter_patcher] if self.adapter_patcher is not None else []

    @property
    def biases(self) -> tuple:
        """Additive logit for each acting identity's keys: strength s multiplies the attention
        weight video queries give each of its reference tokens by s before normalisation
        (1 = official, no mask)."""
        return tuple(None if self.strengths[j] == 1.0 else math.log(self.strengths[j]) for j in self.acting)

    def build(self, dm, grid_hw, dtype, device, transformer_options) -> ReferenceKV:
        # Placement follows the full list, so silencing one person (strength 0) moves no other.
        offsets = reference_offsets(dm, [i.reference for i in self.identities])
        kv = build_identities_kv(dm, self.adapter, [self.identities[j].reference for j in self.acting],
                                 [offsets[j] for j in self.acting], grid_hw, dtype, device,
                                 transformer_options)
        return kv.to("cpu") if self.cache_on_cpu else kv

    def query_groups(self, frame_index, grid_hw, device):
        return query_groups([self.identities[j].region for j in self.acting], frame_index,
                            grid_hw[0], grid_hw[1], device)

    def sigma_window(self, model_patcher):
        if self.start_percent <= 0.0 and self.end_percent >= 1.0:
            return None
        ms = model_patcher.get_model_object("model_sampling")
        return ms.percent_to_sigma(self.start_percent), ms.percent_to_sigma(self.end_percent)

    # -- wrappers ---------------------------------------------------------------------

    def outer_sample_wrapper(self, executor, *args, **kwargs):
        guider = executor.class_obj
        # guider.model_options is the copy CFGGuider.sample made for this run.
        to = guider.model_options.setdefault("transformer_options", {})
        run = RunCache(self, guider.model_patcher, self.sigma_window(guider.model_patcher))
        previous = to.get(RUN_KEY)
        to[RUN_KEY] = run
        try:
            return executor(*args, **kwargs)
        finally:
            run.clear()
            if previous is None:
                to.pop(RUN_KEY, None)
            else:
                to[RUN_KEY] = previous

    def active(self, sigma, run) -> bool:
        if not self.acting:
            return False
        window = run.window if run is not None else None
        if window is None:
            return True
        return _within(float(sigma.reshape(-1)[0]), window[1], window[0])

    def apply_model_wrapper(self, executor, x, t, c_concat=None, c_crossattn=None, control=None,
                            transformer_options={}, **kwargs):
        """Around BaseModel.apply_model, outside any compiled region: decide whether the
        identity acts at this sigma, find or build the reference K/V, and hand them to the
        forward through a per-call copy of transformer_options."""
        run = transformer_options.get(RUN_KEY)
        if run is not None and run.owner is not self:
            run = None
        if not self.active(t, run):
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        base_model = executor.class_obj
        dm = getattr(base_model.diffusion_model, "_orig_mod", base_model.diffusion_model)
        if run is None:
            # Called outside a sampling run (no OUTER_SAMPLE): correct, but nothing to reuse.
            run = RunCache(self)
        grid_hw = video_grid(dm, x)
        kv = run.get(dm, grid_hw, compute_dtype(base_model), x.device, transformer_options)
        frames = -(-x.shape[2] // dm.patch_size[0])
        groups = run.groups(_frame_index(transformer_options, frames), grid_hw, x.device)
        biases = self.biases
        key_bias = biases[0] if len(set(biases)) == 1 else tuple(
            (stop - start, bias) for (start, stop), bias in zip(kv.spans, biases))
        call = CallState(kv, key_bias, transformer_options.get("optimized_attention_override"),
                         groups, biases, frames * grid_hw[0] * grid_hw[1])
        to = transformer_options.copy()
        to[CALL_KEY] = call
        to["optimized_attention_override"] = standin_attention
        out = executor(x, t, c_concat, c_crossattn, control, to, **kwargs)
        self._check_reach(call, len(dm.blocks), run)
        return out

    @staticmethod
    def _check_reach(call: CallState, n_blocks: int, run: RunCache):
        # A call in which no attention ran at all never reached the blocks (a cache node such
        # as EasyCache answered it): nothing was lost, nothing to say.
        if call.attention_calls == 0 or run.warned_blocks:
            return
        if len(call.blocks_used) == n_blocks:
            return
        run.warned_blocks = True
        entered = len(call.blocks_entered)
        if entered < n_blocks:
            why = (f"another node replaced {n_blocks - entered} of the model's blocks without "
                   f"calling the original block")
        else:
            why = ("another node replaced the self-attention of some blocks with code that does "
                   "not call ComfyUI's attention with the block's transformer_options")
        log.warning("Stand-In acted on %d of %d blocks: %s. The identity will be weaker.",
                    len(call.blocks_used), n_blocks, why)


class StandInBlockPatch:
    """``("double_block", i)`` replacement: marks block *i* as entered, so that its
    self-attention takes the reference, and runs the original block (ComfyUI's own code, with
    everything other nodes patched into it). Chains whatever replacement was there before."""

    def __init__(self, index: int, patch: StandInPatch, prev=None):
        self.index = index
        self.patch = patch
        self.prev = prev

    def __deepcopy__(self, memo):
        return StandInBlockPatch(self.index, self.patch, copy.deepcopy(self.prev, memo))

    def to(self, device_or_dtype):
        # MultiGPU casts the patches of each device's clone, and the clones share this object:
        # a chained patch that moves returns a new object here, never a changed shared one.
        if self.prev is not None and hasattr(self.prev, "to"):
            prev = self.prev.to(device_or_dtype)
            if prev is not self.prev:
                return StandInBlockPatch(self.index, self.patch, prev)
        return self

    def models(self):
        models = list(self.patch.models())
        if self.prev is not None and hasattr(self.prev, "models"):
            models += self.prev.models()
        return models

    def __call__(self, args, extra):
        original_block = extra["original_block"]
        call = args["transformer_options"].get(CALL_KEY)
        if call is not None:
            index = self.index

            def original_block(a, _block=original_block):
                call.pending = index
                call.blocks_entered.add(index)
                out = _block(a)
                call.pending = None
                return out

        if self.prev is not None:
            return self.prev(args, {**extra, "original_block": original_block})
        return original_block(args)


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------

def make_adapter_patcher(adapter: StandInAdapter):
    """The adapter's one ModelPatcher, through which ComfyUI's memory manager loads and
    offloads it with the model.

    One per adapter, kept on the adapter: ComfyUI tracks loaded models by patcher, and a
    patcher that dies while its module lives on (a new patcher per Apply, the adapter still
    held by the loader's output) is what ComfyUI reports as "memory leak with model
    StandInAdapter"; it also left one stale entry per Apply in the loaded-models list.
    """
    patcher = adapter.__dict__.get("_standin_patcher")
    if patcher is None:
        patcher = comfy.model_patcher.ModelPatcher(
            adapter,
            load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device())
        adapter.__dict__["_standin_patcher"] = patcher
    return patcher


def remove_standin(model) -> None:
    """Take an earlier Stand-In identity off a clone (the latest Apply wins)."""
    model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY)
    model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, KEY)
    replace = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for block_key, p in list(replace.items()):
        if isinstance(p, StandInBlockPatch):
            if p.prev is None:
                replace.pop(block_key)
            else:
                replace[block_key] = p.prev


def find_standin(model) -> StandInPatch | None:
    for w in model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, KEY):
        owner = getattr(w, "__self__", None)
        if isinstance(owner, StandInPatch):
            return owner
    return None


def apply_standin(model, adapter: StandInAdapter, reference, strength: float = 1.0,
                  start_percent: float = 0.0, end_percent: float = 1.0, adapter_patcher=None,
                  cache_on_cpu: bool = False):
    """Return a clone of ``model`` carrying the Stand-In identity; ``model`` is not touched.

    ``reference`` is the reference image's latent as the DiT sees it (after the model's
    ``process_latent_in``), shape [1, 16, 1, h, w]; or a list of ``IdentitySpec`` (several
    people on one model, the official dev/multi baseline, each with its own strength and
    optional region). ``strength`` scales every identity's own strength.
    """
    dm = wan_diffusion_model(model)
    check_adapter_fits(dm, adapter)
    if isinstance(reference, (list, tuple)):
        if not reference:
            raise StandInError("No identity to apply: connect at least one identity.")
        identities = []
        for n, spec in enumerate(reference, 1):
            if not isinstance(spec, IdentitySpec):
                raise StandInError(f"Identity {n} is a {type(spec).__name__}, not an identity.")
            s = float(spec.strength)
            if not math.isfinite(s) or s < 0.0:
                raise StandInError(f"Identity {n}: strength must be a finite number >= 0 (got {s}).")
            if spec.region is not None and not isinstance(spec.region, Region):
                raise StandInError(f"Identity {n}: the region is a {type(spec.region).__name__}, not a Region.")
            try:
                ref = check_reference(dm, spec.reference)
            except StandInError as e:
                raise StandInError(f"Identity {n}: {e}") from None
            identities.append(IdentitySpec(ref, s, spec.region))
        reference = identities
    else:
        reference = check_reference(dm, reference)
    if not (0.0 <= start_percent <= end_percent <= 1.0):
        raise StandInError(f"start_percent ({start_percent}) and end_percent ({end_percent}) must "
                           f"satisfy 0 <= start <= end <= 1.")
    if not math.isfinite(strength) or strength < 0.0:
        raise StandInError(f"Identity strength must be a finite number >= 0 (got {strength}).")

    patched = model.clone()
    if find_standin(patched) is not None:
        log.warning("This model already carried a Stand-In identity; the new one replaces it.")
        remove_standin(patched)
    if adapter_patcher is None:
        adapter_patcher = make_adapter_patcher(adapter)
    patch = StandInPatch(adapter, adapter_patcher, reference, strength, start_percent, end_percent,
                         cache_on_cpu)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY,
                                 patch.outer_sample_wrapper)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, KEY,
                                 patch.apply_model_wrapper)
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for i in range(len(dm.blocks)):
        prev = existing.get(("double_block", i))
        patched.set_model_patch_replace(StandInBlockPatch(i, patch, prev), "dit", "double_block", i)
    return patched
