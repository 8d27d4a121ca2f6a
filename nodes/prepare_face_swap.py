"""Prepare Face Swap Video: the official face-swap source video (cropped, trimmed, reference pasted, mask)."""

from __future__ import annotations

import logging

import torch

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..engine.faces import swap as face_swap
from .canvas_text import show_on_node
from .sockets import CATEGORY, NODE_PREFIX, Identities, IdentitySocket

log = logging.getLogger(__name__)


def check_frames(images, what: str) -> None:
    if images is None or images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] < 3:
        shape = None if images is None else tuple(images.shape)
        raise ValueError(f"{what} got no video frames (shape {shape}): connect the images output of "
                         "Get Video Components (after Load Video), or another IMAGE batch of frames.")


def identity_reference(identity):
    """(image [S, S, 3], alpha [S, S] or None) of an identity, as numpy."""
    image = identity.image[0].detach().float().cpu().numpy()
    alpha = getattr(identity, "alpha", None)
    return image, (None if alpha is None else alpha.detach().float().cpu().numpy())


class PrepareFaceSwapVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "PrepareFaceSwapVideo",
            display_name="Prepare Face Swap Video",
            category=CATEGORY,
            description=("Prepares a source video for Stand-In face swap as the official pipeline does: "
                         "centre-crops it to multiples of 16, trims it to 4n+1 frames, finds the largest "
                         "face in every frame and pastes the reference person onto it (aligned on face "
                         "landmarks), and returns the per-frame mask of what was pasted. VAE-encode the "
                         "frames, set the mask with Face Swap Latent Mask and re-noise with Sample Video "
                         "at denoise 0.85."),
            inputs=[
                io.Image.Input("images", tooltip="The source video's frames (Get Video Components' images)."),
                IdentitySocket.Input("identity", tooltip="From Encode Reference Face: the person pasted "
                                                         "in (with white_background on, only the person)."),
                io.Boolean.Input("align", default=True,
                                 tooltip="Match the reference's angle and size to each face with a similarity "
                                         "transform fitted on face landmarks (official default). Off: paste "
                                         "the reference into a square of 1.5x each face box."),
                io.Int.Input("dilation", default=face_swap.DILATION, min=0, max=100,
                             tooltip="Without alignment: the face mask is dilated by this many pixels on a "
                                     "512x512 view of the face crop (official 10)."),
                io.Int.Input("feather", default=face_swap.FEATHER, min=0, max=151,
                             tooltip="Without alignment: Gaussian feathering of the face mask, in pixels on "
                                     "a 512x512 view of the face crop (official 21; even values add 1)."),
                io.Mask.Input("face_mask", optional=True,
                              tooltip="Optional per-frame face masks (1 = the face to replace) from any node, "
                                      "of the uncropped frames: choose which face is swapped, and replace the "
                                      "ellipse used without alignment. A frame whose mask is empty is left "
                                      "unchanged. One mask serves every frame."),
                io.Boolean.Input("allow_no_face", default=False, optional=True,
                                 tooltip="When no face is found in any frame, nothing would be swapped and "
                                         "sampling would only re-noise the video: off refuses it before sampling; "
                                         "on passes the frames on unchanged."),
            ],
            outputs=[
                io.Image.Output("pasted_images", display_name="images",
                                tooltip="The cropped, trimmed frames with the reference pasted in: VAE-encode these."),
                io.Mask.Output("mask", display_name="mask",
                               tooltip="Per frame, where the reference was pasted (the warped alpha), 1 = swapped."),
                io.Int.Output("width", display_name="width", tooltip="Width used (multiple of 16)."),
                io.Int.Output("height", display_name="height", tooltip="Height used (multiple of 16)."),
                io.Int.Output("length", display_name="length", tooltip="Frames used (4n+1)."),
            ],
        )

    @classmethod
    def execute(cls, images, identity, align=True, dilation=face_swap.DILATION, feather=face_swap.FEATHER,
                face_mask=None, allow_no_face=False) -> io.NodeOutput:
        if isinstance(identity, Identities):
            raise ValueError("Face swap replaces one face: connect one person's identity (Encode Reference "
                             "Face or Consent Record), not the output of Add Identity.")
        out, out_masks, result = prepare(images, identity, align, dilation, feather, face_mask)
        if not allow_no_face and not any(i.face_box is not None for i in result.infos):
            raise ValueError(
                f"No face was found in any of the {len(result.infos)} frames, so nothing would be swapped (the "
                f"sampler would only re-noise the video). Use a video where the face is visible and not tiny, "
                f"connect a face_mask, or turn on allow_no_face to go on anyway.")
        g = result.geometry
        device = comfy.model_management.intermediate_device()
        # The warnings (frames without a face, cropping) are shown on the node.
        shown = {"text": list(result.warnings)} if result.warnings else None
        show_on_node(result.warnings)
        return io.NodeOutput(out.to(device), out_masks.to(device), g.width, g.height, g.length, ui=shown)


def prepare(images, identity, align=True, dilation=face_swap.DILATION, feather=face_swap.FEATHER, face_mask=None):
    """What the node does, without its preview: (frames [L, h, w, 3], masks [L, h, w], SwapResult).
    tests/prepare_face_swap.py runs this too."""
    check_frames(images, "Prepare Face Swap Video")
    n, h, w = images.shape[:3]
    geometry = face_swap.video_geometry(n, h, w)
    masks = None
    if face_mask is not None:
        masks = face_mask if face_mask.ndim == 3 else face_mask.reshape((-1,) + tuple(face_mask.shape[-2:]))
        masks = masks.detach().float().cpu().numpy()
    frames = images.detach().cpu()[..., :3]  # RGBA frames (e.g. from PNGs): the colour only
    if frames.dtype != torch.float32:
        frames = frames.float()
    for start in range(0, geometry.length, 8):  # in slices: a whole-video mask would cost a quarter of it
        if not torch.isfinite(frames[start:start + 8]).all():
            raise ValueError("The video frames contain NaN or infinite values: check the node that made them.")
    image, alpha = identity_reference(identity)
    reference = face_swap.swap_reference(image, alpha)

    out = torch.empty((geometry.length, geometry.height, geometry.width, 3), dtype=torch.float32)
    out_masks = torch.empty((geometry.length, geometry.height, geometry.width), dtype=torch.float32)
    pbar = comfy.utils.ProgressBar(geometry.length)

    def progress(i):
        comfy.model_management.throw_exception_if_processing_interrupted()
        pbar.update_absolute(i + 1, geometry.length)

    result = face_swap.swap_video(frames.numpy(), reference, face_masks=masks, align=align, dilation=dilation,
                                  feather=feather, out_frames=out.numpy(), out_masks=out_masks.numpy(),
                                  progress=progress)
    swapped = sum(1 for i in result.infos if i.face_box is not None)
    log.info("Prepare Face Swap Video: %dx%d, %d frames, face swapped in %d (%d aligned)", geometry.width,
             geometry.height, geometry.length, swapped, sum(1 for i in result.infos if i.aligned))
    return out, out_masks, result
