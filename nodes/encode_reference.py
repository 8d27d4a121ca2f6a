"""Encode Reference Face: prepare the reference photo the official way and VAE-encode it once."""

from __future__ import annotations

import logging

import numpy as np
import torch

import comfy.ldm.wan.vae
import comfy.model_management
import folder_paths
from comfy_api.latest import io, ui

from ..engine.faces import detect as face
from .canvas_text import show_on_node
from .load_adapter import FOLDER
from ..engine.identity.patch import LATENT_CHANNELS
from .sockets import CATEGORY, NODE_PREFIX, Identity, IdentitySocket

log = logging.getLogger(__name__)


def vae_kind(vae) -> str:
    model = getattr(vae, "first_stage_model", None)
    return f"{type(model).__module__}.{type(model).__name__}"


def check_wan21_vae(vae) -> None:
    model = getattr(vae, "first_stage_model", None)
    if isinstance(model, comfy.ldm.wan.vae.WanVAE) and getattr(vae, "latent_channels", None) == LATENT_CHANNELS:
        return
    channels = getattr(vae, "latent_channels", "?")
    if type(model).__module__.endswith("wan.vae2_2"):
        what = f"the Wan 2.2 VAE ({channels}-channel latents, made for the Wan 2.2 5B model)"
    else:
        what = f"a {type(model).__name__} VAE ({channels}-channel latents)"
    raise ValueError(
        f"The reference must be encoded with the Wan 2.1 VAE (wan_2.1_vae.safetensors), the VAE "
        f"that Wan 2.1 14B and Wan 2.2 A14B use; this is {what}. Connect the Wan 2.1 VAE.")


def to_uint8_levels(image: np.ndarray) -> np.ndarray:
    """The official pipeline encodes an 8-bit image; keep exactly those levels."""
    return (np.clip(np.round(image * 255.0), 0, 255) / 255.0).astype(np.float32)


MAX_PIXELS = 64 * 2**20  # a 64 MP photo; a face needs a few hundred pixels of it


def limit_size(photo: torch.Tensor):
    """Very large photos are scaled down (area) before preparation rather than refused:
    the 512x512 reference is made from a crop around the face either way."""
    h, w = photo.shape[0], photo.shape[1]
    if h * w <= MAX_PIXELS:
        return photo, None
    scale = (MAX_PIXELS / (h * w)) ** 0.5
    nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
    small = torch.nn.functional.interpolate(photo.movedim(-1, 0).unsqueeze(0).float(), size=(nh, nw),
                                            mode="area")[0].movedim(0, -1)
    return small, (f"The reference photo is {w}x{h} ({h * w / 1e6:.0f} MP); it was scaled down to "
                   f"{nw}x{nh} before preparation.")


class EncodeReferenceFace(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "EncodeReferenceFace",
            display_name="Encode Reference Face",
            category=CATEGORY,
            description=("Prepares a reference photo exactly as Stand-In was trained (crop 1.5x around "
                         "the largest face, white square, 512 px, white background) and encodes it "
                         "with the Wan VAE. The preview output shows exactly what the model sees."),
            inputs=[
                io.Image.Input("image", tooltip="Photo of the person (or subject). Only the first "
                                                "image of a batch is used."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (wan_2.1_vae.safetensors), also used by Wan 2.2 A14B."),
                io.Combo.Input("detector", options=face.detector_choices(), default="auto",
                               tooltip="How the face is found. auto: YuNet when face_detection_yunet_2023mar.onnx "
                                       "is in models/standin, else the bundled BlazeFace detector. blazeface, "
                                       "yunet, haar (offered with OpenCV 4 only): that detector only. none: the image "
                                       "is already a face crop."),
                io.Boolean.Input("white_background", default=True,
                                 tooltip="Paint everything but the person white, as the official "
                                         "pipeline does (uses subject_mask when connected)."),
                io.Mask.Input("subject_mask", optional=True,
                              tooltip="Optional mask of the person to keep, 1 = keep (from any segmentation "
                                      "node); everything else becomes white. Load Image's MASK is 1 where the "
                                      "picture is transparent: pass it through Invert Mask first."),
                io.Mask.Input("face_mask", optional=True,
                              tooltip="Optional mask marking the face; its bounding box replaces "
                                      "automatic face detection."),
            ],
            outputs=[
                IdentitySocket.Output("identity", display_name="identity",
                                      tooltip="The encoded reference; connect it to Apply Stand-In Identity."),
                io.Image.Output("preview", display_name="preview",
                                tooltip="Exactly the 512x512 pixels that were VAE-encoded."),
            ],
        )

    @classmethod
    def execute(cls, image, vae, detector="auto", white_background=True, subject_mask=None,
                face_mask=None) -> io.NodeOutput:
        check_wan21_vae(vae)
        if image is None or image.ndim != 4 or image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError("Encode Reference Face got no image: connect a photo (IMAGE) of the person.")
        notes = []
        if image.shape[0] > 1:
            notes.append(f"The image input holds {image.shape[0]} images; only the first is used "
                         f"(one identity per model).")
        photo = image[0]
        if not torch.isfinite(photo).all():
            raise ValueError("The reference image contains NaN or infinite pixel values: a node before "
                             "Encode Reference Face produced invalid pixels. Check that node.")
        photo, note = limit_size(photo)
        if note:
            notes.append(note)

        def first(mask):
            if mask is None:
                return None
            m = (mask if mask.ndim == 3 else mask.unsqueeze(0))[0].detach().float()
            if note and tuple(m.shape) == tuple(image.shape[1:3]):
                # The photo was scaled down: scale its masks with it.
                m = torch.nn.functional.interpolate(m[None, None], size=tuple(photo.shape[:2]), mode="area")[0, 0]
            return m.cpu().numpy()

        prepared = face.prepare_reference(
            photo.detach().float().cpu().numpy(), subject_mask=first(subject_mask),
            face_mask=first(face_mask), detector=detector, white_background=white_background,
            model_dirs=folder_paths.get_folder_paths(FOLDER))
        notes += list(prepared.warnings)
        for note in notes:
            log.warning("Encode Reference Face: %s", note)
        show_on_node(notes)

        pixels = torch.from_numpy(to_uint8_levels(prepared.image)).unsqueeze(0)
        latent = vae.encode(pixels)
        if latent.ndim == 4:
            latent = latent.unsqueeze(2)
        identity = Identity(
            latent=latent.to(device="cpu", dtype=torch.float32), image=pixels,
            vae_kind=vae_kind(vae), latent_channels=int(latent.shape[1]),
            face_box=prepared.face_box, crop=prepared.crop, detector=prepared.detector,
            warnings=tuple(notes),
            alpha=None if prepared.mask is None else torch.from_numpy(prepared.mask.astype(np.float32)))
        preview = ui.PreviewImage(pixels, cls=cls).as_dict()
        if notes:
            preview["text"] = notes
        return io.NodeOutput(identity, pixels, ui=preview)
