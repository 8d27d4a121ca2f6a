"""Stand-In adapter files: reading them safely, validating them, holding their weights.

An adapter is the rank-128 LoRA that Stand-In adds to the q/k/v projections of every
self-attention layer, applied to the reference tokens only. The official files are a
``torch.save`` of a plain dict ``blocks.N.self_attn.{q,k,v}_loras.{down,up}.weight``
(sometimes under ``state_dict``); re-packaged files may be safetensors and may carry a
``diffusion_model.`` prefix. An adapter is recognised by its keys and shapes, never by
its file name.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

PROJECTIONS = ("q", "k", "v")
PARTS = ("down", "up")
KEY_PATTERN = re.compile(r"^blocks\.(\d+)\.self_attn\.([qkv])_loras\.(down|up)\.weight$")
# Prefixes seen on re-packaged files; the first one that makes the keys parse wins.
KEY_PREFIXES = ("", "diffusion_model.", "model.diffusion_model.")
SAFETENSORS_EXT = (".safetensors", ".sft")
PICKLE_EXT = (".ckpt", ".pt", ".pth", ".bin")
SUPPORTED_EXT = SAFETENSORS_EXT + PICKLE_EXT

EXPECTED_FORM = "blocks.N.self_attn.{q,k,v}_loras.{down,up}.weight"
WHERE_TO_GET = ("Official adapters: https://huggingface.co/BowenXue/Stand-In "
                "(Stand-In_wan2.1_T2V_14B.ckpt, Stand-In_wan2.2_T2V_A14B_high.ckpt / _low.ckpt).")

# Known Wan DiT sizes, to name what an adapter or a model is in error messages.
KNOWN_WAN_SIZES = {
    (40, 5120): "Wan 2.1 T2V 14B / Wan 2.2 T2V A14B",
    (30, 1536): "Wan 2.1 T2V 1.3B",
    (30, 3072): "Wan 2.2 TI2V 5B",
}


class AdapterError(ValueError):
    """A file that cannot be used as a Stand-In adapter; the message says why and what to do."""


def describe_size(num_blocks: int, dim: int) -> str:
    name = KNOWN_WAN_SIZES.get((num_blocks, dim))
    text = f"{num_blocks} blocks of width {dim}"
    return f"{text} ({name})" if name else text


def read_tensor_file(path: str, name: str | None = None) -> dict:
    """Read a ``.safetensors`` or pickled checkpoint without running any code from it.

    ``name`` (default: the file's own name) decides the format by its extension, for files
    kept under a temporary name such as a download's ``.part``.
    """
    name = name or os.path.basename(path)
    if not os.path.isfile(path):
        raise AdapterError(f"Adapter file not found: {path}")
    lower = name.lower()
    if os.path.getsize(path) == 0:
        raise AdapterError(f"{name} is empty (0 bytes): the download or copy did not finish. "
                           f"Download it again. {WHERE_TO_GET}")
    if lower.endswith(SAFETENSORS_EXT):
        import safetensors.torch
        try:
            return safetensors.torch.load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise AdapterError(f"{name} is not a readable safetensors file ({e}). It is probably "
                               f"truncated or not a safetensors file at all; download it again. "
                               f"{WHERE_TO_GET}") from e
    if lower.endswith(PICKLE_EXT):
        try:
            # weights_only=True: the unpickler only builds tensors and plain containers,
            # so a checkpoint from a stranger cannot run code when it is opened.
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise AdapterError(f"{name} was refused: it contains Python objects other than "
                               f"tensors, and loading those could run code hidden in the file. "
                               f"Use the official adapter file or a .safetensors copy. "
                               f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
        except Exception as e:
            raise AdapterError(f"{name} could not be read as a PyTorch checkpoint ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}). It is probably truncated "
                               f"or damaged; download it again. {WHERE_TO_GET}") from e
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise AdapterError(f"{name} holds a {type(obj).__name__}, not a dict of tensors, "
                               f"so it is not a Stand-In adapter. {WHERE_TO_GET}")
        not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if not_tensors:
            raise AdapterError(f"{name} was refused: entries {', '.join(map(str, not_tensors[:5]))} "
                               f"are not tensors. A Stand-In adapter holds only tensors named "
                               f"{EXPECTED_FORM}.")
        return obj
    raise AdapterError(f"{name}: unsupported file type. Stand-In adapters are "
                       f"{', '.join(SUPPORTED_EXT)} files.")


@dataclass(frozen=True)
class AdapterSpec:
    num_blocks: int
    dim: int
    rank: int
    dtype: torch.dtype
    prefix: str

    def describe(self) -> str:
        return f"{describe_size(self.num_blocks, self.dim)}, rank {self.rank}"


def _strip_prefix(sd: dict) -> tuple[str, dict]:
    for prefix in KEY_PREFIXES:
        if any(k.startswith(prefix) and KEY_PATTERN.match(k[len(prefix):]) for k in sd):
            return prefix, {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
    return "", sd


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def validate_state_dict(sd: dict, name: str = "adapter") -> tuple[AdapterSpec, dict]:
    """Check that ``sd`` is a complete Stand-In adapter; return its spec and canonical keys.

    Raises AdapterError naming exactly what is wrong and what was expected.
    """
    if not sd:
        raise AdapterError(f"{name} holds no tensors, so it is not a Stand-In adapter. {WHERE_TO_GET}")
    prefix, sd = _strip_prefix(sd)
    parsed = {}
    unexpected = []
    for key, value in sd.items():
        m = KEY_PATTERN.match(key)
        if m is None:
            unexpected.append(key)
        else:
            parsed[(int(m.group(1)), m.group(2), m.group(3))] = (key, value)
    if not parsed:
        shown = ", ".join(list(sd)[:4])
        raise AdapterError(f"{name} is not a Stand-In adapter: none of its {len(sd)} keys has the form "
                           f"{EXPECTED_FORM} (it has e.g. {shown}). If this is a Wan model or an "
                           f"ordinary LoRA, load it with ComfyUI's own loaders. {WHERE_TO_GET}")
    if unexpected:
        more = f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
        raise AdapterError(f"{name} has keys that are not part of a Stand-In adapter: "
                           f"{', '.join(unexpected[:5])}{more}. Expected only {EXPECTED_FORM}; "
                           f"use an unmodified adapter file. {WHERE_TO_GET}")

    blocks = sorted({b for b, _, _ in parsed})
    num_blocks = blocks[-1] + 1
    missing = [f"blocks.{b}.self_attn.{p}_loras.{part}.weight"
               for b in range(num_blocks) for p in PROJECTIONS for part in PARTS
               if (b, p, part) not in parsed]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise AdapterError(f"{name} is incomplete: {len(missing)} of {num_blocks * 6} tensors are "
                           f"missing ({', '.join(missing[:5])}{more}). Every block 0..{num_blocks - 1} "
                           f"needs q, k and v, each with down and up. Download the file again. "
                           f"{WHERE_TO_GET}")

    first_key, first_down = parsed[(0, "q", "down")]
    if first_down.ndim != 2:
        raise AdapterError(f"{name}: {first_key} has shape {_shape(first_down)}; a LoRA down "
                           f"projection is a matrix [rank, width].")
    rank, dim = first_down.shape
    dtype = first_down.dtype
    for (b, p, part), (key, t) in sorted(parsed.items()):
        expected = (rank, dim) if part == "down" else (dim, rank)
        if tuple(t.shape) != expected:
            raise AdapterError(f"{name}: {key} has shape {_shape(t)}, expected "
                               f"[{expected[0]}, {expected[1]}] (rank {rank}, width {dim}, as in "
                               f"{first_key}). The file is damaged or mixes adapters.")
        if not t.is_floating_point():
            raise AdapterError(f"{name}: {key} holds {t.dtype} values; adapter weights must be "
                               f"floating point.")
        if not torch.isfinite(t.float() if t.dtype.itemsize == 1 else t).all():
            raise AdapterError(f"{name}: {key} contains NaN or infinite values; the file is "
                               f"damaged. Download it again. {WHERE_TO_GET}")
    canonical = {f"blocks.{b}.self_attn.{p}_loras.{part}.weight": t
                 for (b, p, part), (_, t) in parsed.items()}
    return AdapterSpec(num_blocks=num_blocks, dim=dim, rank=rank, dtype=dtype, prefix=prefix), canonical


class LoRAPair(torch.nn.Module):
    """``up(down(x))``: the official LoRALinearLayer, computed in float32 whatever the DiT dtype."""

    def __init__(self, dim: int, rank: int, dtype: torch.dtype):
        super().__init__()
        self.down = torch.nn.Linear(dim, rank, bias=False, device="meta", dtype=dtype)
        self.up = torch.nn.Linear(rank, dim, bias=False, device="meta", dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The official layer casts its input to float32 and its output back; the weights
        # may sit on another device when ComfyUI keeps them offloaded.
        down = self.down.weight.to(device=x.device, dtype=torch.float32)
        up = self.up.weight.to(device=x.device, dtype=torch.float32)
        return torch.nn.functional.linear(torch.nn.functional.linear(x.float(), down), up).to(x.dtype)


class LoRABlock(torch.nn.Module):
    def __init__(self, dim: int, rank: int, dtype: torch.dtype):
        super().__init__()
        self.q_loras = LoRAPair(dim, rank, dtype)
        self.k_loras = LoRAPair(dim, rank, dtype)
        self.v_loras = LoRAPair(dim, rank, dtype)


class _SelfAttnHolder(torch.nn.Module):
    def __init__(self, dim: int, rank: int, dtype: torch.dtype):
        super().__init__()
        self.self_attn = LoRABlock(dim, rank, dtype)


class StandInAdapter(torch.nn.Module):
    """The adapter's weights, laid out under the official key names."""

    def __init__(self, spec: AdapterSpec):
        super().__init__()
        self.spec = spec
        self.blocks = torch.nn.ModuleList(_SelfAttnHolder(spec.dim, spec.rank, spec.dtype)
                                          for _ in range(spec.num_blocks))

    @classmethod
    def from_state_dict(cls, sd: dict, name: str = "adapter") -> "StandInAdapter":
        spec, canonical = validate_state_dict(sd, name)
        module = cls(spec)
        module.load_state_dict(canonical, strict=True, assign=True)
        return module.eval().requires_grad_(False)

    def lora(self, block: int) -> LoRABlock:
        return self.blocks[block].self_attn

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_adapter_file(path: str) -> StandInAdapter:
    """Read and validate an adapter file; the weights stay in the file's dtype on the CPU."""
    name = os.path.basename(path)
    adapter = StandInAdapter.from_state_dict(read_tensor_file(path), name)
    log.info("Stand-In adapter %s: %s, %.1fM parameters", name, adapter.spec.describe(),
             adapter.num_params / 1e6)
    return adapter
