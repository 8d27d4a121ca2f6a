"""Write the 512x512 reference Stand-In would encode for a photo, to look at it.

    .venv/bin/python tests/prepare_reference.py IMAGE OUT.png [--mask MASK.png]
        [--face-mask FACE.png] [--face-box X1,Y1,X2,Y2] [--detector auto]
        [--keep-background] [--model-dir DIR ...]

The photo is read the way ComfyUI's Load Image node reads it (EXIF rotation applied, RGB,
values / 255) and goes through the pack's own ``engine/faces/detect.py``, the code the Encode
Reference Face node runs; OUT.png holds exactly the pixels that get VAE-encoded. Masks are
read as greyscale, white = keep (subject) or face. What was found is printed on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "dev"))

import comfyhost  # noqa: E402


def load_face_module():
    pack = comfyhost.load_pack()
    return importlib.import_module(f"{pack.__name__}.engine.faces.detect")


def read_image(path: str) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "I":
            im = im.point(lambda v: v * (1 / 255))
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def read_mask(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("L"), dtype=np.float32) / 255.0


def main(argv=None) -> int:
    face = load_face_module()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("image")
    p.add_argument("out", help="PNG to write (512x512 unless --size)")
    p.add_argument("--mask", help="subject mask: white = the person/subject to keep")
    p.add_argument("--face-mask", help="face mask: its bounding box replaces detection")
    p.add_argument("--face-box", help="x1,y1,x2,y2 in pixels: replaces detection")
    p.add_argument("--detector", default="auto", choices=face.detector_choices())
    p.add_argument("--keep-background", action="store_true", help="do not paint the background white")
    p.add_argument("--model-dir", action="append", default=[],
                   help=f"folder holding optional detector files ({face.YUNET_FILE}); repeatable")
    p.add_argument("--size", type=int, default=face.REFERENCE_SIZE)
    args = p.parse_args(argv)
    # The module also logs its warnings for ComfyUI's console; here they are printed below.
    logging.disable(logging.WARNING)

    box = None
    if args.face_box:
        box = tuple(float(v) for v in args.face_box.split(","))
    result = face.prepare_reference(
        read_image(args.image),
        subject_mask=read_mask(args.mask) if args.mask else None,
        face_mask=read_mask(args.face_mask) if args.face_mask else None,
        face_box=box, detector=args.detector, white_background=not args.keep_background,
        size=args.size, model_dirs=args.model_dir)
    pixels = np.rint(result.image * 255.0).astype(np.uint8)
    Image.fromarray(pixels).save(args.out)
    face_box = None if result.face_box is None else tuple(round(v, 1) for v in result.face_box)
    print(f"detector: {result.detector}\nface_box: {face_box}\ncrop: {result.crop}\n"
          f"background: {result.background}\nwrote: {args.out}", file=sys.stderr)
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
