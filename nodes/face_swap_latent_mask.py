"""Face Swap Latent Mask: the face-swap mask on the latent grid, the official way, as a noise mask.

With this mask ComfyUI's own masked sampling (KSamplerX0Inpaint: outside the mask the model
sees, and the step returns, the source latent re-noised with the same noise to the current
sigma) is the official ``force_background_consistency``; tests/test_face_swap_sampling.py
proves it step for step.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from .sockets import CATEGORY, NODE_PREFIX

# The official pipeline maps the 8-bit mask to [-1, 1] (preprocess_video) and keeps latents
# where it is > 0.5: a mask value above 0.75 on ComfyUI's [0, 1] scale.
OFFICIAL_THRESHOLD = 0.75
# Latent channels -> pixels per latent cell: Wan 2.1 VAE (16 channels) 8, Wan 2.2 VAE (48) 16.
VAE_FACTOR = {16: 8, 48: 16}


def latent_mask(mask: torch.Tensor, latent_shape, threshold: float = OFFICIAL_THRESHOLD) -> torch.Tensor:
    """Per-frame pixel masks [T, H, W] -> hard mask [1, 1, T', h, w] on the latent grid of a
    [B, C, T', h, w] video latent: nearest-exact over time and space, then > threshold."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(f"Face Swap Latent Mask needs per-frame masks [frames, height, width], got shape "
                         f"{tuple(mask.shape)}: connect the mask output of Prepare Face Swap Video.")
    if len(latent_shape) != 5:
        raise ValueError(f"Face Swap Latent Mask needs a video latent [batch, channels, frames, height, width], "
                         f"got shape {tuple(latent_shape)}: connect VAE Encode of the prepared frames.")
    t, h, w = (int(v) for v in mask.shape)
    lt, lh, lw = (int(v) for v in latent_shape[2:])
    frames_ok = t == 1 or (t - 1) // 4 + 1 == lt
    # The VAE's pixels per latent: a mask of any other size belongs to other frames, and
    # resampling it would regenerate the wrong region without a word.
    factor = VAE_FACTOR.get(int(latent_shape[1]))
    if factor is not None and (h, w) != (lh * factor, lw * factor):
        raise ValueError(f"The mask is {w}x{h} but the video latent is {lw}x{lh}, i.e. {lw * factor}x{lh * factor} "
                         f"frames: connect the mask and the VAE-encoded frames of the same Prepare Face Swap Video "
                         f"(or resize the mask to {lw * factor}x{lh * factor}).")
    if not frames_ok or h % lh or w % lw or h // lh != w // lw:
        raise ValueError(f"The mask ({t} frames of {w}x{h}) does not belong to this latent ({lt} latent frames of "
                         f"{lw}x{lh}): connect the mask and the VAE-encoded frames of the same Prepare Face "
                         "Swap Video.")
    grid = torch.nn.functional.interpolate(mask.detach().float().cpu()[None, None], size=(lt, lh, lw),
                                           mode="nearest-exact")
    return (grid > threshold).float()


class FaceSwapLatentMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "FaceSwapLatentMask",
            display_name="Face Swap Latent Mask",
            category=CATEGORY,
            description=("Sets the face-swap mask on the encoded video as a noise mask, computed as the "
                         "official pipeline does (hard, nearest-exact onto the latent grid, 4n+1 frames onto "
                         "n+1 latent frames). Sampling then regenerates only the face and keeps every latent "
                         "outside it equal to the source's: the official force_background_consistency."),
            inputs=[
                io.Latent.Input("latent", tooltip="VAE Encode of Prepare Face Swap Video's images."),
                io.Mask.Input("mask", tooltip="Prepare Face Swap Video's mask."),
                io.Float.Input("threshold", default=OFFICIAL_THRESHOLD, min=0.0, max=1.0, step=0.01,
                               tooltip="Latents are regenerated where the mask exceeds this. 0.75 is the "
                                       "official rule (it thresholds the mask at 0.5 after mapping it to "
                                       "[-1, 1])."),
            ],
            outputs=[
                io.Latent.Output(tooltip="The same latent with the mask as its noise mask: connect to Sample Video "
                                         "(denoise 0.85) or KSampler."),
            ],
        )

    @classmethod
    def execute(cls, latent, mask, threshold=OFFICIAL_THRESHOLD) -> io.NodeOutput:
        samples = latent["samples"]
        out = latent.copy()
        out["noise_mask"] = latent_mask(mask, samples.shape, threshold)
        return io.NodeOutput(out)
