"""Write what Prepare Face Swap Video makes of a video and a reference photo, to look at it.

    .venv/bin/python tests/prepare_face_swap.py VIDEO REFERENCE_PHOTO OUT_DIR [--mask-dir DIR]
        [--no-align] [--dilation 10] [--feather 21] [--keep-background]

The video is read by ComfyUI's own Load Video code (VideoFromFile -> components: frames and
fps); the photo as Load Image reads it; the reference is prepared by the code Encode Reference
Face runs (engine/faces/detect.py, BlazeFace, selfie segmentation, 8-bit levels) and the frames go through
the node's own function (nodes/prepare_face_swap.prepare). OUT_DIR receives frame_00000.png ...
(the pasted frames, cropped and trimmed), mask_00000.png ... (8-bit, 255 = swapped) and
info.json (width, height, length, fps, per-frame face_box or null, warnings). --mask-dir: one
greyscale image per source frame (sorted by name, white = the face to replace), or a single one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "dev"))
sys.path.insert(0, HERE)

import comfyhost  # noqa: E402
from prepare_reference import read_image, read_mask  # noqa: E402


def read_masks(folder: str):
    import torch
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".bmp")))
    if not names:
        raise SystemExit(f"--mask-dir {folder} holds no images.")
    return torch.from_numpy(np.stack([read_mask(os.path.join(folder, n)) for n in names]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video")
    p.add_argument("reference")
    p.add_argument("out_dir")
    p.add_argument("--mask-dir", help="per-frame face masks (white = the face to replace)")
    p.add_argument("--no-align", action="store_true", help="paste into the face box, without landmarks")
    p.add_argument("--dilation", type=int, default=10)
    p.add_argument("--feather", type=int, default=21)
    p.add_argument("--keep-background", action="store_true", help="reference without white background")
    args = p.parse_args(argv)

    comfyhost.setup_comfy(cpu=True)
    pack = comfyhost.load_pack()
    import torch
    from comfy_api.input_impl import VideoFromFile
    face = importlib.import_module(f"{pack.__name__}.engine.faces.detect")
    objects = importlib.import_module(f"{pack.__name__}.nodes.sockets")
    encode_reference = importlib.import_module(f"{pack.__name__}.nodes.encode_reference")
    prepare_face_swap = importlib.import_module(f"{pack.__name__}.nodes.prepare_face_swap")
    logging.disable(logging.WARNING)  # the warnings are printed below and written to info.json

    components = VideoFromFile(args.video).get_components()
    prepared = face.prepare_reference(read_image(args.reference), white_background=not args.keep_background)
    pixels = torch.from_numpy(encode_reference.to_uint8_levels(prepared.image)).unsqueeze(0)
    identity = objects.Identity(latent=torch.zeros(1, 16, 1, 64, 64), image=pixels, vae_kind="none",
                                latent_channels=16, face_box=prepared.face_box, crop=prepared.crop,
                                detector=prepared.detector, warnings=tuple(prepared.warnings),
                                alpha=None if prepared.mask is None else torch.from_numpy(prepared.mask))
    masks = read_masks(args.mask_dir) if args.mask_dir else None
    frames, out_masks, result = prepare_face_swap.prepare(components.images, identity, align=not args.no_align,
                                                          dilation=args.dilation, feather=args.feather,
                                                          face_mask=masks)
    os.makedirs(args.out_dir, exist_ok=True)
    for i in range(frames.shape[0]):
        Image.fromarray(np.rint(frames[i].numpy() * 255).astype(np.uint8)).save(
            os.path.join(args.out_dir, f"frame_{i:05d}.png"))
        Image.fromarray(np.rint(out_masks[i].numpy() * 255).astype(np.uint8)).save(
            os.path.join(args.out_dir, f"mask_{i:05d}.png"))
    g = result.geometry
    info = {
        "width": g.width, "height": g.height, "length": g.length, "fps": float(components.frame_rate),
        "source": {"width": int(components.images.shape[2]), "height": int(components.images.shape[1]),
                   "frames": int(components.images.shape[0]), "crop_x": g.x0, "crop_y": g.y0},
        "frames": [{"face_box": None if f.face_box is None else [round(float(v), 2) for v in f.face_box],
                    "aligned": f.aligned} for f in result.infos],
        "reference": {"detector": prepared.detector, "face_box": prepared.face_box, "crop": list(prepared.crop)},
        "warnings": list(prepared.warnings) + list(result.warnings),
    }
    with open(os.path.join(args.out_dir, "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    swapped = sum(1 for f in result.infos if f.face_box is not None)
    print(f"{g.width}x{g.height}, {g.length} frames at {info['fps']:g} fps; face swapped in {swapped} "
          f"({sum(1 for f in result.infos if f.aligned)} aligned); wrote {args.out_dir}", file=sys.stderr)
    for message in info["warnings"]:
        print(f"warning: {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
