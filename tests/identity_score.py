"""Score how well a video keeps a person's face: the Identity Similarity node's code, from a shell.

    .venv/bin/python tests/identity_score.py REFERENCE_PHOTO VIDEO_OR_FRAME_DIR
        [--embedder auto|dlib|arcface] [--detector auto] [--model-dir DIR ...] [--plot OUT.png]

VIDEO_OR_FRAME_DIR: a video file (mp4, webm, ...; read with OpenCV, or PyAV when OpenCV
cannot), an animated WEBP/GIF, or a folder of frame images (sorted by name). Prints one JSON
line: {"embedder", "frames", "faces", "mean", "min", "per_frame": [...], ...}, per_frame null
where a frame had no face. The per-frame work is engine/faces/embed.py's score_video, the
function the node calls.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

import numpy as np
from PIL import Image, ImageOps, ImageSequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "dev"))

import comfyhost  # noqa: E402

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def load_pack_module(name):
    pack = comfyhost.load_pack()
    return importlib.import_module(f"{pack.__name__}.{name}")


def read_image(path: str) -> np.ndarray:
    """uint8 RGB, as ComfyUI's Load Image reads a file (EXIF rotation applied)."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def read_frames(path: str) -> np.ndarray:
    """[N, H, W, 3] uint8 from a folder of images, an animated image or a video file."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXT))
        if not names:
            raise SystemExit(f"{path}: no image files ({', '.join(IMAGE_EXT)}) in this folder.")
        return np.stack([read_image(os.path.join(path, n)) for n in names])
    if path.lower().endswith((".webp", ".gif", ".png", ".apng")):
        with Image.open(path) as im:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    import cv2
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        try:
            import av
        except ImportError:
            raise SystemExit(f"{path}: OpenCV could not read this video and PyAV is not installed.") from None
        with av.open(path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise SystemExit(f"{path}: no frames could be read.")
    return np.stack(frames)


def score(reference_path: str, frames_path: str, embedder="auto", detector="auto", model_dirs=()):
    fe = load_pack_module("engine.faces.embed")
    return fe.score_video(read_image(reference_path), read_frames(frames_path), embedder, detector, model_dirs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reference")
    p.add_argument("video", help="video file, animated image, or folder of frames")
    p.add_argument("--embedder", default="auto", choices=["auto", "dlib", "arcface"])
    p.add_argument("--detector", default="auto", choices=["auto", "yunet", "blazeface", "haar"])
    p.add_argument("--model-dir", action="append", default=[],
                   help="folder holding optional model files (w600k_r50.onnx, YuNet, dlib .dat); repeatable")
    p.add_argument("--plot", help="also write the node's chart to this PNG")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    fe = load_pack_module("engine.faces.embed")
    try:
        result = score(args.reference, args.video, args.embedder, args.detector, args.model_dir)
    except (fe.EmbedderUnavailable, fe.NoReferenceFace) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.plot:
        Image.fromarray(load_pack_module("engine.faces.plot").plot_score(result)).save(args.plot)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
