"""Restore Background: the generated face composited onto the source frames, colour-matched."""

from __future__ import annotations

import torch

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..engine.faces import swap as face_swap
from .sockets import CATEGORY, NODE_PREFIX
from .prepare_face_swap import check_frames


def matching_source(source: torch.Tensor, length: int, height: int, width: int) -> torch.Tensor:
    """The source frames the generated video was made from: as given, or cropped and trimmed the
    way Prepare Face Swap Video does."""
    n, h, w = source.shape[:3]
    if (h, w) == (height, width) and n >= length:
        return source[:length]
    g = face_swap.video_geometry(n, h, w)
    if (g.height, g.width) == (height, width) and n >= length:
        return source[:length, g.y0:g.y0 + g.height, g.x0:g.x0 + g.width]
    raise ValueError(f"The source frames ({n} of {w}x{h}) do not match the generated video ({length} of "
                     f"{width}x{height}): connect the frames that went into Prepare Face Swap Video.")


class RestoreBackground(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "RestoreBackground",
            display_name="Restore Background",
            category=CATEGORY,
            description=("After face swap: keeps the source video everywhere but the face. The generated "
                         "frames are colour-matched to the source inside the mask (LAB mean and standard "
                         "deviation) and composited onto the source frames through the mask, dilated and "
                         "feathered, as the official preprocessor's background restorer does."),
            inputs=[
                io.Image.Input("images", tooltip="The generated frames (Sample Video's IMAGE, or VAE Decode)."),
                io.Image.Input("source_images", tooltip="The source video's frames (as given to Prepare Face "
                                                        "Swap Video; they are cropped and trimmed the same way)."),
                io.Mask.Input("mask", tooltip="Prepare Face Swap Video's mask."),
                io.Int.Input("dilation", default=25, min=0, max=200,
                             tooltip="Grow the mask by this many pixels before compositing (official 25)."),
                io.Int.Input("feather", default=51, min=0, max=301,
                             tooltip="Gaussian feathering of the grown mask in pixels (official 50, made odd)."),
                io.Float.Input("color_match", default=0.75, min=0.0, max=1.0, step=0.05,
                               tooltip="How far the generated face's LAB colours are moved to the source "
                                       "face's (official 0.75); 0 turns colour matching off."),
            ],
            outputs=[
                io.Image.Output(tooltip="The source frames with the generated face."),
            ],
        )

    @classmethod
    def execute(cls, images, source_images, mask, dilation=25, feather=51, color_match=0.75) -> io.NodeOutput:
        check_frames(images, "Restore Background (images)")
        check_frames(source_images, "Restore Background (source_images)")
        length, height, width = images.shape[:3]
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape[1:]) != (height, width) or mask.shape[0] not in (1, length):
            raise ValueError(f"The mask ({mask.shape[0]} of {mask.shape[-1]}x{mask.shape[-2]}) does not match the "
                             f"generated frames ({length} of {width}x{height}): connect Prepare Face Swap "
                             "Video's mask for this video.")
        source = matching_source(source_images, length, height, width)
        out = torch.empty((length, height, width, 3), dtype=torch.float32)
        out_np = out.numpy()
        pbar = comfy.utils.ProgressBar(length)
        for i in range(length):
            comfy.model_management.throw_exception_if_processing_interrupted()
            face_swap.restore_frame(images[i, :, :, :3].detach().float().cpu().numpy(),
                                    source[i, :, :, :3].detach().float().cpu().numpy(),
                                    mask[0 if mask.shape[0] == 1 else i].detach().float().cpu().numpy(),
                                    out_np[i], dilation=dilation, feather=feather, color_match=color_match)
            pbar.update_absolute(i + 1, length)
        return io.NodeOutput(out.to(comfy.model_management.intermediate_device()))
