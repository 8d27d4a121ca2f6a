"""Sample Video: the one-node way from (patched) Wan model(s) to frames."""

from __future__ import annotations

import logging

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from .sockets import CATEGORY, NODE_PREFIX

log = logging.getLogger(__name__)

MAX_SIZE = 8192
_NOT_CONNECTED = object()  # validate_inputs: an optional input left unconnected
WAN21_BOUNDARY = 0.875  # official Wan 2.2 T2V switch: low-noise expert once t < 0.875 * 1000


def video_size_problems(width, height, length) -> dict:
    """{input name: what is wrong with it, with the nearest values that work} for a Wan video
    size; empty when it is fine. A None value (a linked input, unknown before the graph runs) is
    not checked."""
    problems = {}
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if value < 16 or value > MAX_SIZE:
            problems[name] = f"{name} {value} is outside 16..{MAX_SIZE}"
        elif value % 16:
            lower = max(16, value - value % 16)
            problems[name] = f"{name} {value} is not a multiple of 16 (use {lower} or {lower + 16})"
    if length is not None:
        if length < 1 or length > MAX_SIZE:
            problems["length"] = f"length {length} is outside 1..{MAX_SIZE}"
        elif (length - 1) % 4:
            lower = max(1, length - (length - 1) % 4)
            problems["length"] = f"length {length} is not of the form 4n+1 (use {lower} or {lower + 4} frames)"
    return problems


def _names(names: list) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def video_size_problem(width, height, length) -> str | None:
    """The refusal of a Wan video size, naming the inputs to change; None when it is fine.

    ComfyUI attaches a validate_inputs refusal to every input the method takes (width, height and
    length alike, each marked on the canvas), so the text itself says which of them to change and
    which are fine."""
    problems = video_size_problems(width, height, length)
    if not problems:
        return None
    values = {"width": width, "height": height, "length": length}
    wrong = [n for n in values if n in problems]
    fine = [f"{n} {v}" for n, v in values.items() if n not in problems and v is not None]
    text = "Wan video size: " + "; ".join(problems[n] for n in wrong) + "."
    change = f"Change {_names(wrong)}"
    if fine:
        change += f" only; {_names(fine)} {'is' if len(fine) == 1 else 'are'} fine"
    return f"{text} {change}."


def check_video_size(width: int, height: int, length: int) -> None:
    problem = video_size_problem(width, height, length)
    if problem:
        raise ValueError(problem)


def switch_index(sigmas: torch.Tensor, boundary: float) -> int:
    """First step whose starting sigma is below the boundary: the low-noise expert's first step."""
    steps = len(sigmas) - 1
    for i in range(steps):
        if float(sigmas[i]) < boundary:
            return i
    return steps


def continue_masked(model, current: torch.Tensor, source: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise, latent) that start a masked sampling run at ``sigma`` from the state the previous
    stage left, with ``source`` staying the latent that is re-noised outside the mask.

    A run starts from noise_scaling(sigma, noise, latent) = sigma * noise + (1 - sigma) * latent
    (flow models) and re-noises ``latent`` with ``noise`` outside the mask at every step. The first
    stage's output is its final state x divided by (1 - sigma) (inverse_noise_scaling). Choosing
    latent = source and noise = (x - (1 - sigma) * source) / sigma starts the second run exactly at
    x, and outside the mask, where x = sigma * n + (1 - sigma) * source, that noise is the original
    noise n: the background follows the official force_background_consistency through both experts.
    """
    ms = model.get_model_object("model_sampling")
    s = float(sigma)
    if not isinstance(ms, comfy.model_sampling.CONST) or s <= 0.0 or s >= 1.0:
        return torch.zeros_like(current), current
    inner = model.model
    state = inner.process_latent_in(current.float()) * (1.0 - s)
    # ComfyUI leaves an all-zero latent unprocessed (inner_sample); so must this.
    src = inner.process_latent_in(source.float()) if torch.count_nonzero(source) > 0 else source.float()
    return (state - (1.0 - s) * src) / s, source


def latent_to_rgb(model, samples: torch.Tensor) -> torch.Tensor:
    """A rough picture of a latent from the latent format's colour factors (no VAE needed)."""
    fmt = model.model.latent_format
    if fmt.latent_rgb_factors is None:
        raise ValueError("Connect a VAE to Sample Video to get frames from this model.")
    factors = torch.tensor(fmt.latent_rgb_factors, dtype=torch.float32)
    bias = torch.tensor(fmt.latent_rgb_factors_bias or [0.0, 0.0, 0.0], dtype=torch.float32)
    x = samples.float()
    if x.ndim == 4:
        x = x.unsqueeze(2)
    rgb = torch.einsum("bcthw,cr->bthwr", x, factors) + bias
    rgb = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
    # Wan's VAE makes 4 video frames of each latent frame after the first.
    repeats = torch.tensor([1] + [4] * (rgb.shape[1] - 1))
    rgb = torch.repeat_interleave(rgb, repeats, dim=1)
    b, t, h, w, _ = rgb.shape
    up = torch.nn.functional.interpolate(rgb.reshape(b * t, h, w, 3).movedim(-1, 1), scale_factor=8, mode="nearest")
    return up.movedim(1, -1)


class SampleVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "SampleVideo",
            display_name="Sample Video",
            category=CATEGORY,
            description=("Samples a Wan video with ComfyUI's samplers in one node: an empty video of "
                         "the given size, or an input LATENT with denoise (video-to-video, face swap "
                         "with a noise mask). Optional second model for Wan 2.2 A14B: the high-noise "
                         "model runs first, the low-noise model from the switch boundary on."),
            inputs=[
                io.Model.Input("model", tooltip="The (Stand-In patched) Wan model; for Wan 2.2 A14B the high-noise expert."),
                io.Conditioning.Input("positive", tooltip="What the video shows."),
                io.Conditioning.Input("negative", tooltip="What the video avoids."),
                io.Int.Input("width", default=832, min=16, max=MAX_SIZE, step=16,
                             tooltip="Video width in pixels (multiple of 16). Ignored when a latent is connected."),
                io.Int.Input("height", default=480, min=16, max=MAX_SIZE, step=16,
                             tooltip="Video height in pixels (multiple of 16). Ignored when a latent is connected."),
                io.Int.Input("length", default=81, min=1, max=MAX_SIZE, step=4,
                             tooltip="Number of frames, 4n+1 (81 = 5 s at 16 fps). Ignored when a latent is connected."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Videos sampled at once. Ignored when a latent is connected."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the starting noise."),
                io.Int.Input("steps", default=30, min=1, max=10000, tooltip="Sampling steps (both experts together)."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (1 skips the negative pass)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default="uni_pc",
                               tooltip="ComfyUI sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="simple",
                               tooltip="ComfyUI scheduler."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1.0 for text-to-video; lower keeps more of an input latent "
                                       "(video-to-video, face swap)."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional starting latent (e.g. a VAE-encoded source video, with "
                                        "a noise mask for face swap); replaces width/height/length."),
                io.Model.Input("model_2", optional=True,
                               tooltip="Optional Wan 2.2 A14B low-noise expert (patched with its own adapter)."),
                io.Float.Input("switch_boundary", default=WAN21_BOUNDARY, min=0.0, max=1.0, step=0.005,
                               optional=True,
                               tooltip="With model_2: the sigma below which the low-noise model takes over "
                                       "(0.875 as in the official Wan 2.2 T2V pipeline)."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional Wan VAE to decode the frames; without it IMAGE is a rough "
                                     "colour preview of the latent."),
            ],
            outputs=[
                io.Latent.Output(tooltip="The sampled video latent."),
                io.Image.Output(tooltip="The frames (decoded with the VAE, or a rough preview without one)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None, length=None, latent=_NOT_CONNECTED):
        """At queue time, before any model loads: sizes typed into the node. (A linked size arrives
        as None and is checked when the node runs; with a latent connected the sizes are unused.)"""
        if latent is not _NOT_CONNECTED:
            return True
        return video_size_problem(width, height, length) or True

    @classmethod
    def execute(cls, model, positive, negative, width, height, length, batch_size, seed, steps, cfg,
                sampler_name, scheduler, denoise, latent=None, model_2=None, switch_boundary=WAN21_BOUNDARY,
                vae=None) -> io.NodeOutput:
        if latent is None:
            check_video_size(width, height, length)
            samples = torch.zeros([batch_size, 16, ((length - 1) // 4) + 1, height // 8, width // 8],
                                  device=comfy.model_management.intermediate_device())
            latent = {"samples": samples}
        samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
        noise_mask = latent.get("noise_mask")

        ksampler = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                           scheduler=scheduler, denoise=denoise, model_options=model.model_options)
        sigmas = ksampler.sigmas
        total = len(sigmas) - 1
        if total <= 0:
            out = latent.copy()
            return io.NodeOutput(out, cls.frames(model, vae, samples))
        sampler = comfy.samplers.sampler_object(sampler_name)
        callback = latent_preview.prepare_callback(model, total)
        disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED

        stages = [(model, sigmas, noise)]
        if model_2 is not None:
            k = switch_index(sigmas, switch_boundary)
            log.info("Sample Video: %d steps on model, %d on model_2 (switch at sigma %.3f)", k, total - k, switch_boundary)
            if k == 0:
                stages = [(model_2, sigmas, noise)]
            elif k < total:
                # (Decided by the step index, not by object identity: the same model may be
                # connected to both inputs.)
                stages = [(model, sigmas[:k + 1], noise), (model_2, sigmas[k:], torch.zeros_like(noise))]

        current = samples
        offset = 0
        for index, (stage_model, stage_sigmas, stage_noise) in enumerate(stages):
            def stage_callback(step, x0, x, _total, offset=offset):
                callback(step + offset, x0, x, total)
            start = current
            if index > 0 and noise_mask is not None:
                # Masked sampling re-noises the *source* latent outside the mask at every step, with
                # the noise it was started from; the second expert must get both, not the first
                # expert's output as its "source" (see continue_masked).
                stage_noise, start = continue_masked(stage_model, current, samples, stage_sigmas[0])
            current = comfy.sample.sample_custom(stage_model, stage_noise, cfg, sampler, stage_sigmas, positive,
                                                 negative, start, noise_mask=noise_mask,
                                                 callback=stage_callback, disable_pbar=disable_pbar, seed=seed)
            offset += len(stage_sigmas) - 1
        out = latent.copy()
        out["samples"] = current
        return io.NodeOutput(out, cls.frames(model, vae, current))

    @staticmethod
    def frames(model, vae, samples):
        if vae is None:
            return latent_to_rgb(model, samples)
        images = vae.decode(samples)
        if images.ndim == 5:
            images = images.reshape(-1, images.shape[-3], images.shape[-2], images.shape[-1])
        return images
