"""Stand-In on ComfyUI's native Wan DiT: the identity branch, RSA, CPM and the reference K/V cache.

How it hooks into ComfyUI (only extension points that are stable across 0.3.6x-0.3.7x):

* ``OUTER_SAMPLE`` wrapper: opens a per-generation cache in the run's own
  ``transformer_options`` (a copy ComfyUI makes for every sampling run) and empties it
  when sampling ends, however it ends.
* ``DIFFUSION_MODEL`` wrapper: on every model call, decides whether the identity acts
  (strength, sigma window), finds or builds the reference keys/values for this video grid,
  and hands them to the blocks through a per-call copy of ``transformer_options``.
* ``("dit", ("double_block", i))`` block replacements: run block *i* with Restricted
  Self-Attention (video queries see [video keys; reference keys] under one softmax).
  A replacement another node installed before us is chained, not dropped.

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
from dataclasses import dataclass, field

import torch

import comfy.ldm.common_dit
import comfy.ldm.modules.attention
import comfy.ldm.wan.model as wan_model
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension

from .adapter import StandInAdapter, describe_size

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

def apply_rope(x: torch.Tensor, freqs: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate pairs of channels of x [b, s, heads, head_dim] by ComfyUI's rope table.

    With ``out`` (same shape, any strides) the result is written there, rounded to out's
    dtype exactly as ``type_as`` would round it.
    """
    x_ = x.to(freqs.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    rot = freqs[..., 0] * x_[..., 0]
    rot.addcmul_(freqs[..., 1], x_[..., 1])
    if out is None:
        return rot.reshape(*x.shape).type_as(x)
    return out.copy_(rot.reshape(*x.shape))


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


def reference_rope(dm, grid_h: int, grid_w: int, ref_h: int, ref_w: int, device) -> torch.Tensor:
    """Conditional Position Mapping: reference token (i, j) sits at (t=-1, h=H+i, w=W+j)."""
    ids = torch.zeros((1, ref_h, ref_w, 3), device=device, dtype=torch.float32)
    ids[..., 0] = -1.0
    ids[..., 1] += torch.arange(grid_h, grid_h + ref_h, device=device, dtype=torch.float32).view(1, -1, 1)
    ids[..., 2] += torch.arange(grid_w, grid_w + ref_w, device=device, dtype=torch.float32).view(1, 1, -1)
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

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def to(self, device) -> "ReferenceKV":
        return ReferenceKV([k.to(device) for k in self.keys], [v.to(device) for v in self.values], self.tokens)


@torch.no_grad()
def build_reference_kv(dm, adapter: StandInAdapter, reference: torch.Tensor, grid_hw, dtype,
                       device, transformer_options=None) -> ReferenceKV:
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
    freqs = reference_rope(dm, grid_hw[0], grid_hw[1], ref_h, ref_w, device)

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


# --------------------------------------------------------------------------------------
# The video stream: a Wan block whose self-attention also sees the reference keys/values
# --------------------------------------------------------------------------------------

def standin_block_forward(block, x, e, freqs, context, transformer_options, k_ref, v_ref, key_bias=None):
    """WanAttentionBlock.forward with Restricted Self-Attention for the video tokens."""
    m = block_modulation(block, e, x)
    x = x.contiguous()
    y = torch.addcmul(m[0], block.norm1(x), 1 + m[1])

    sa = block.self_attn
    b, s = y.shape[:2]
    n, d = sa.num_heads, sa.head_dim
    q = apply_rope(sa.norm_q(sa.q(y)).view(b, s, n, d), freqs).view(b, s, n * d)
    # The rotated video keys go straight into the [video; reference] buffer: concatenating
    # afterwards would write and read every key once more per block and step (memory traffic
    # that, unlike the extra attention, buys nothing) and hold a second copy meanwhile.
    k_video = sa.norm_k(sa.k(y))
    k = torch.empty((b, s + k_ref.shape[1], n * d), dtype=k_video.dtype, device=k_video.device)
    k[:, s:] = k_ref
    apply_rope(k_video.view(b, s, n, d), freqs, out=k[:, :s].view(b, s, n, d))
    del k_video
    # The values come out of the model's own Linear (whatever ops, offloading or weight
    # patches it carries), so they are concatenated.
    v = torch.cat((sa.v(y), v_ref.expand(b, -1, -1)), dim=1)
    del y
    mask = None
    if key_bias is not None:
        mask = torch.zeros((1, 1, 1, k.shape[1]), device=q.device, dtype=q.dtype)
        mask[..., s:] = key_bias
    out = sa.o(attention(q, k, v, n, transformer_options, mask=mask))
    del q, k, v
    x = torch.addcmul(x, out, m[2])
    del out

    x = x + block.cross_attn(block.norm3(x), context, context_img_len=None,
                             transformer_options=transformer_options)
    y = block.ffn(torch.addcmul(m[3], block.norm2(x), 1 + m[4]))
    return torch.addcmul(x, y, m[5])


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

    def clear(self):
        self.entries.clear()


@dataclass
class CallState:
    dm: torch.nn.Module
    kv: ReferenceKV
    key_bias: float | None
    compute_device: torch.device
    blocks_used: set = field(default_factory=set)


# --------------------------------------------------------------------------------------
# The patch
# --------------------------------------------------------------------------------------

class StandInPatch:
    """One identity on one model: adapter, reference, strength, sigma window.

    Immutable once built and shared by every clone of the patched MODEL (deepcopy returns
    the same object): it carries no per-run state; that lives in the run's transformer
    options and dies with the run.
    """

    def __init__(self, adapter: StandInAdapter, adapter_patcher, reference: torch.Tensor,
                 strength: float = 1.0, start_percent: float = 0.0, end_percent: float = 1.0,
                 cache_on_cpu: bool = False):
        self.adapter = adapter
        self.adapter_patcher = adapter_patcher
        self.reference = reference
        self.strength = float(strength)
        self.start_percent = float(start_percent)
        self.end_percent = float(end_percent)
        self.cache_on_cpu = bool(cache_on_cpu)

    def __deepcopy__(self, memo):
        return self

    def models(self):
        """The adapter's ModelPatcher, for ComfyUI to load with the model (via the block patches)."""
        return [self.adapter_patcher] if self.adapter_patcher is not None else []

    @property
    def key_bias(self):
        """Additive logit for reference keys: strength s multiplies the attention weight
        video queries give each reference token by s before normalisation (1 = official)."""
        return None if self.strength == 1.0 else math.log(self.strength)

    def build(self, dm, grid_hw, dtype, device, transformer_options) -> ReferenceKV:
        kv = build_reference_kv(dm, self.adapter, self.reference, grid_hw, dtype, device,
                                transformer_options)
        log.debug("Stand-In: reference K/V built for grid %s (%d tokens, %.1f MB)",
                  grid_hw, kv.tokens, kv.nbytes / 2**20)
        return kv.to("cpu") if self.cache_on_cpu else kv

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

    def active(self, transformer_options, run) -> bool:
        if self.strength == 0.0:
            return False
        window = run.window if run is not None else None
        sigmas = transformer_options.get("sigmas")
        if window is None or sigmas is None:
            return True
        sigma = float(sigmas.reshape(-1)[0])
        return window[1] <= sigma <= window[0]

    def diffusion_model_wrapper(self, executor, x, timestep, context, clip_fea=None,
                                time_dim_concat=None, transformer_options={}, **kwargs):
        run = transformer_options.get(RUN_KEY)
        if run is not None and run.owner is not self:
            run = None
        if not self.active(transformer_options, run):
            return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
        dm = executor.class_obj
        if run is None:
            # Called outside a sampling run (no OUTER_SAMPLE): correct, but nothing to reuse.
            run = RunCache(self)
        grid = video_grid(dm, x)
        kv = run.get(dm, grid, x.dtype, x.device, transformer_options)
        call = CallState(dm=dm, kv=kv, key_bias=self.key_bias, compute_device=x.device)
        to = transformer_options.copy()
        to[CALL_KEY] = call
        out = executor(x, timestep, context, clip_fea, time_dim_concat, to, **kwargs)
        if len(call.blocks_used) != len(dm.blocks) and not run.warned_blocks:
            run.warned_blocks = True
            log.warning("Stand-In acted on %d of %d blocks: another node replaced the other "
                        "blocks without calling the original. The identity will be weaker.",
                        len(call.blocks_used), len(dm.blocks))
        return out


class StandInBlockPatch:
    """Replacement for ``("double_block", i)``; chains whatever replacement was there before."""

    def __init__(self, index: int, patch: StandInPatch, prev=None):
        self.index = index
        self.patch = patch
        self.prev = prev

    def __deepcopy__(self, memo):
        return StandInBlockPatch(self.index, self.patch, copy.deepcopy(self.prev, memo))

    def to(self, device_or_dtype):
        if self.prev is not None and hasattr(self.prev, "to"):
            self.prev = self.prev.to(device_or_dtype)
        return self

    def models(self):
        models = list(self.patch.models())
        if self.prev is not None and hasattr(self.prev, "models"):
            models += self.prev.models()
        return models

    def __call__(self, args, extra):
        call = args["transformer_options"].get(CALL_KEY)
        if call is None:
            if self.prev is not None:
                return self.prev(args, extra)
            return extra["original_block"](args)

        def run_block(a):
            block = call.dm.blocks[self.index]
            k_ref = call.kv.keys[self.index].to(call.compute_device, non_blocking=True)
            v_ref = call.kv.values[self.index].to(call.compute_device, non_blocking=True)
            call.blocks_used.add(self.index)
            img = standin_block_forward(block, a["img"], a["vec"], a["pe"], a["txt"],
                                        a["transformer_options"], k_ref, v_ref, call.key_bias)
            return {"img": img}

        if self.prev is not None:
            return self.prev(args, {"original_block": run_block})
        return run_block(args)


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------

def make_adapter_patcher(adapter: StandInAdapter):
    """Wrap the adapter so ComfyUI's memory manager loads and offloads it with the model."""
    return comfy.model_patcher.ModelPatcher(
        adapter,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device())


def remove_standin(model) -> None:
    """Take an earlier Stand-In identity off a clone (the latest Apply wins)."""
    model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY)
    model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
    replace = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for block_key, p in list(replace.items()):
        if isinstance(p, StandInBlockPatch):
            if p.prev is None:
                replace.pop(block_key)
            else:
                replace[block_key] = p.prev


def find_standin(model) -> StandInPatch | None:
    for w in model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY):
        owner = getattr(w, "__self__", None)
        if isinstance(owner, StandInPatch):
            return owner
    return None


def apply_standin(model, adapter: StandInAdapter, reference: torch.Tensor, strength: float = 1.0,
                  start_percent: float = 0.0, end_percent: float = 1.0, adapter_patcher=None,
                  cache_on_cpu: bool = False):
    """Return a clone of ``model`` carrying the Stand-In identity; ``model`` is not touched.

    ``reference`` is the reference image's latent as the DiT sees it (after the model's
    ``process_latent_in``), shape [1, 16, 1, h, w].
    """
    dm = wan_diffusion_model(model)
    check_adapter_fits(dm, adapter)
    ref = check_reference(dm, reference)
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
    patch = StandInPatch(adapter, adapter_patcher, ref, strength, start_percent, end_percent,
                         cache_on_cpu)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY,
                                 patch.outer_sample_wrapper)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY,
                                 patch.diffusion_model_wrapper)
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for i in range(len(dm.blocks)):
        prev = existing.get(("double_block", i))
        patched.set_model_patch_replace(StandInBlockPatch(i, patch, prev), "dit", "double_block", i)
    return patched
