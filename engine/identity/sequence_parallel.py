"""Stand-In inside xDiT sequence parallelism (xfuser Ulysses x ring, as Raylight runs Wan).

Under sequence parallelism every rank holds a slice of the video tokens, and Raylight replaces
each Wan block's ``self_attn.forward`` with its own ``usp_self_attn_forward``, which calls
xfuser's attention directly: the pack's ``optimized_attention_override`` never runs there.

A block's reference keys/values do not depend on the video tokens, so every rank builds the
same ones locally (``patch.py``'s reference pass, once per generation, no communication) and
they join xfuser's ``xFuserLongContextAttention`` as *joint* tensors (``joint_strategy="rear"``,
an empty joint query): after Ulysses' all-to-all each rank keeps its heads' slice of them, and
ring attention adds them once, at its last step. Every video query then sees [all video keys;
reference keys] under one softmax: the single-GPU sum. Appending them to each rank's local keys
instead would count every reference key once per ring rank.

Identity strength other than 1 (an additive bias on the reference logits) has no place in
xfuser's kernels, which take no mask; it is refused under sequence parallelism (0 and 1 are exact).

This module imports without ComfyUI and without xfuser; both are looked up when used, on the
machines that run the model (Raylight's actors).
"""

from __future__ import annotations

WRAPPER_KEY = "standin_sequence_parallel"   # DIFFUSION_MODEL wrapper on the actor's ModelPatcher
RAYLIGHT_SELF_ATTENTION = "usp_self_attn_forward"

STRENGTH_REFUSED = (
    "Identity strength {strength} is not available under Raylight's sequence parallelism: "
    "xfuser's attention kernels take no mask, so the reference cannot be weighted exactly. Set "
    "strength to 1.0 (the official behaviour) or 0, use start/end percent to limit the identity "
    "instead, or run on one GPU with Apply Stand-In Identity (RSA/CPM).")


REGIONS_REFUSED = (
    "A person limited to a region of the frame is not available under Raylight's sequence "
    "parallelism (xfuser's kernels take no mask). Give every person the whole frame, or run on "
    "one GPU with Apply Stand-In Identity (RSA/CPM).")


class SequenceParallelError(ValueError):
    """A setup Stand-In cannot run exactly under sequence parallelism; the message says what to do."""


def check_strength(strength: float) -> None:
    if float(strength) not in (0.0, 1.0):
        raise SequenceParallelError(STRENGTH_REFUSED.format(strength=strength))


def check_heads(heads: int, ulysses_degree: int) -> None:
    """Ulysses gives each rank whole attention heads."""
    if ulysses_degree < 1 or heads % ulysses_degree:
        raise SequenceParallelError(
            f"The model has {heads} attention heads, which Ulysses degree {ulysses_degree} does not "
            f"divide: each rank must get whole heads. Use a Ulysses degree that divides {heads} "
            f"(and ring attention for the rest of the GPUs).")


def reference_cache_bytes(blocks: int, dim: int, tokens: int, bytes_per_value: int = 2) -> int:
    """Memory of one rank's reference K/V cache: keys and values [1, tokens, dim] per block.
    Every rank holds all of it (replicated); xfuser reads its own heads' slice."""
    return 2 * blocks * tokens * dim * bytes_per_value


# --------------------------------------------------------------------------------------
# The attention
# --------------------------------------------------------------------------------------

def joint_reference_attention(attention, q, k, v, heads, k_ref, v_ref, skip_reshape=False,
                              skip_output_reshape=False):
    """Sequence-parallel attention of this rank's video queries over [all video keys; reference].

    ``attention``: an ``xFuserLongContextAttention``. ``q, k, v``: this rank's shard in ComfyUI's
    layout, [B, S_local, heads*d] (or [B, heads, S_local, d] with ``skip_reshape``).
    ``k_ref, v_ref``: the block's reference keys/values, [1 or B, tokens, heads*d], the same on
    every rank (any number of references concatenated along tokens). Returns ComfyUI's layout.
    """
    if skip_reshape:
        b, _, s, d = q.shape
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    else:
        b, s, inner = q.shape
        d = inner // heads
        q, k, v = (t.reshape(b, -1, heads, d) for t in (q, k, v))
    k_ref = k_ref.to(device=k.device, dtype=k.dtype)
    v_ref = v_ref.to(device=v.device, dtype=v.dtype)
    k_ref = k_ref.expand(b, *k_ref.shape[1:]).reshape(b, -1, heads, d)
    v_ref = v_ref.expand(b, *v_ref.shape[1:]).reshape(b, -1, heads, d)
    # xfuser appends the joint query to the local queries; an empty one adds no query, so only
    # the reference keys/values join.
    no_query = q.new_empty((b, 0, heads, d))
    out = attention(None, q, k, v, joint_tensor_query=no_query, joint_tensor_key=k_ref,
                    joint_tensor_value=v_ref, joint_strategy="rear")
    if skip_output_reshape:
        return out.transpose(1, 2)
    return out.reshape(b, s, heads * d)


def take_block_reference(transformer_options):
    """The reference keys/values of the block whose self-attention runs now, or None.

    Reads the per-call state ``patch.py``'s APPLY_MODEL wrapper put into transformer_options
    and its block patch marked (``pending``): the same bookkeeping as its attention override,
    so its "acted on n of N blocks" check still holds. Works for any number of references
    concatenated along the token axis.
    """
    from . import patch
    call = transformer_options.get(patch.CALL_KEY)
    if call is None or call.pending is None:
        return None
    index = call.pending
    call.pending = None
    call.attention_calls += 1
    if call.key_bias is not None:
        raise SequenceParallelError(STRENGTH_REFUSED.format(strength="other than 0 and 1"))
    if getattr(call, "groups", None) is not None:
        raise SequenceParallelError(REGIONS_REFUSED)
    call.blocks_used.add(index)
    return call.kv.keys[index], call.kv.values[index]


class SelfAttentionForward:
    """Stands in for one block's ``self_attn.forward`` under sequence parallelism.

    Without a reference for this call (no identity, or outside its sigma window) the forward it
    replaced (Raylight's) runs untouched. With one, ComfyUI's own ``WanSelfAttention.forward``
    runs (q/k/v, RoPE, attn1 patches) with an attention override that hands the shard and the
    reference to xfuser as joint tensors.
    """

    def __init__(self, module, inner, attention):
        self.module = module
        self.inner = inner
        self.attention = attention

    def __call__(self, x, freqs, transformer_options={}, **kwargs):
        ref = take_block_reference(transformer_options)
        if ref is None:
            return self.inner(x, freqs, transformer_options=transformer_options, **kwargs)
        k_ref, v_ref = ref
        attention = self.attention

        def joint(func, q, k, v, heads, *args, **kw):
            return joint_reference_attention(attention, q, k, v, heads, k_ref, v_ref,
                                             skip_reshape=kw.get("skip_reshape", False),
                                             skip_output_reshape=kw.get("skip_output_reshape", False))

        to = dict(transformer_options)
        to["optimized_attention_override"] = joint
        return type(self.module).forward(self.module, x, freqs, transformer_options=to, **kwargs)


# --------------------------------------------------------------------------------------
# On Raylight's actors
# --------------------------------------------------------------------------------------

def _forward_name(fn) -> str:
    return getattr(getattr(fn, "__func__", fn), "__name__", type(fn).__name__)


def install_on_blocks(dm, attention_factory) -> int:
    """Put :class:`SelfAttentionForward` over Raylight's sequence-parallel self-attention of
    every block that does not carry it yet; returns how many were (re)installed.

    Raylight re-injects its forwards whenever the model loads (an ON_LOAD callback), dropping
    ours; this runs at every model call, so the identity is back before the blocks run.
    A block without an instance-level forward runs ComfyUI's own attention, where the pack's
    attention override already acts: left alone.
    """
    installed = 0
    attention = None
    for i, block in enumerate(dm.blocks):
        sa = block.self_attn
        current = sa.__dict__.get("forward")
        if current is None or isinstance(current, SelfAttentionForward):
            continue
        name = _forward_name(current)
        if name != RAYLIGHT_SELF_ATTENTION:
            raise SequenceParallelError(
                f"Block {i}'s self-attention was replaced by '{name}', not Raylight's "
                f"'{RAYLIGHT_SELF_ATTENTION}': Stand-In cannot join the reference to it. Use a "
                f"Wan 2.1 / 2.2 text-to-video (or VACE) model with Raylight's Ulysses / ring "
                f"sequence parallelism.")
        if attention is None:
            attention = attention_factory()
        sa.forward = SelfAttentionForward(sa, current, attention)
        installed += 1
    return installed


def raylight_attention():
    """An ``xFuserLongContextAttention`` as Raylight configured its own (kernel, sync Ulysses)."""
    from raylight.distributed_modules.attention import get_attn_type, get_sync_ulysses
    from xfuser.core.long_ctx_attention import xFuserLongContextAttention
    from yunchang.kernels import AttnType
    return xFuserLongContextAttention(use_sync=get_sync_ulysses(), attn_type=AttnType[get_attn_type()])


class SequenceParallelWrapper:
    """DIFFUSION_MODEL wrapper: (re)installs the joint-reference self-attention, then runs the
    model. One per patched model; holds the xfuser attention it made."""

    def __init__(self, attention_factory=raylight_attention):
        self.attention_factory = attention_factory
        self.attention = None

    def _attention(self):
        if self.attention is None:
            self.attention = self.attention_factory()
        return self.attention

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        dm = executor.class_obj
        dm = getattr(dm, "_orig_mod", dm)
        install_on_blocks(dm, self._attention)
        return executor(*args, **kwargs)


def is_fsdp(dm) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return any(isinstance(m, FSDPModule) for m in (dm, *dm.blocks))


def check_model(model, num_blocks: int | None = None, dim: int | None = None) -> str | None:
    """Why the actor's model cannot take Stand-In under Raylight, or None when it can."""
    from . import patch
    if model is None:
        return "The Ray actors hold no model yet: connect the output of Ray UNET Loader."
    dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    if dm is not None and hasattr(dm, "blocks") and is_fsdp(dm):
        # Checked first: FSDP wraps the model in a class of its own, which the Wan check refuses
        # with a less useful message.
        return ("The Ray actors shard this model with FSDP. Stand-In's reference pass calls the "
                "blocks' attention layers outside their forward, where FSDP holds only a shard of "
                "their weights, so it cannot run there. Turn FSDP off in Ray Init Actor; Ulysses / "
                "ring sequence parallelism alone works.")
    try:
        dm = patch.wan_diffusion_model(model)
    except patch.StandInError as e:
        return str(e)
    if num_blocks is not None and (len(dm.blocks), dm.dim) != (num_blocks, dim):
        from .adapter import describe_size
        return (f"This Stand-In adapter was made for a Wan model with {describe_size(num_blocks, dim)}, "
                f"but the Ray actors run one with {describe_size(len(dm.blocks), dm.dim)}. Use the "
                f"adapter file made for this model.")
    return None


def apply_sequence_parallel(model, adapter, reference, strength=1.0, start_percent=0.0,
                            end_percent=1.0, attention_factory=raylight_attention):
    """``patch.apply_standin`` plus the wrapper that joins the reference inside xfuser's
    attention; returns the clone (the actor's model is untouched)."""
    import comfy.patcher_extension
    from . import patch
    check_strength(strength)
    patched = patch.apply_standin(model, adapter, reference, strength=strength,
                                  start_percent=start_percent, end_percent=end_percent)
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 SequenceParallelWrapper(attention_factory))
    return patched


def apply_on_actor(model, adapter_path=None, adapter_state=None, adapter_name="adapter",
                   latent=None, strength=1.0, start_percent=0.0, end_percent=1.0):
    """What Apply Stand-In Identity (Raylight) runs on every actor (through Raylight's
    ``model_function_runner``): load the adapter, bring the reference latent into the model's
    space, patch a clone of the actor's model and return it (the actor keeps it)."""
    import torch
    from .adapter import StandInAdapter, load_adapter_file
    problem = check_model(model)
    if problem:
        raise SequenceParallelError(problem)
    if adapter_path is not None:
        adapter = load_adapter_file(adapter_path)
    else:
        adapter = StandInAdapter.from_state_dict(adapter_state, adapter_name)
    reference = model.model.process_latent_in(torch.as_tensor(latent))
    return apply_sequence_parallel(model, adapter, reference, strength, start_percent, end_percent)


def check_on_actor(model, num_blocks=None, dim=None):
    return check_model(model, num_blocks, dim)
