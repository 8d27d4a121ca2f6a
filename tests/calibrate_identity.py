"""Calibrate the identity-similarity score on real photographs.

    .venv/bin/python tests/calibrate_identity.py [--embedder dlib|arcface|auto] [--model-dir DIR]

For each person (tests/identity_media.PEOPLE: real photographs shipped with installed
packages) the photo is varied the ways a video or a user varies it (crops, a mirror image,
rotations of 5-10 degrees, JPEG at quality 20-50, scaling 0.35-2x, combinations) and every
variant is embedded through the node's code path (face_embed: the pack's detector, the
embedder). Prints:

* same person: cosine of each variant to its own original photo, and of variants among
  themselves;
* different people: cosine of every variant and original of one person to every one of
  another's;
* the distributions (min, p5, median, max), the gap (lowest same-person minus highest
  different-people score) and the threshold in the middle of the gap;

and ends with one JSON line. The test suite asserts the same ordering
(tests/test_identity_similarity.py).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import logging
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "dev"))
sys.path.insert(0, HERE)

import comfyhost  # noqa: E402
import identity_media  # noqa: E402


def load_engine():
    pack = comfyhost.load_pack()
    return importlib.import_module(f"{pack.__name__}.engine.faces.embed")


def embed_people(fe, embedder, detector="auto", model_dirs=()):
    """{person: {variant: unit vector}}; variants whose face was not found are listed apart."""
    _, detect = fe.face._pick_detector(detector, model_dirs, [])
    vectors, missed = {}, []
    for person, load in identity_media.PEOPLE.items():
        rgb = load()
        original = fe.embed_largest_face(rgb, embedder, detect)
        if original is None:
            missed.append(f"{person}/original")
            continue
        vectors[person] = {"original": original.vector}
        for name, img in identity_media.variations(rgb, original.box).items():
            found = fe.embed_largest_face(fe.to_rgb8(img), embedder, detect)
            if found is None:
                missed.append(f"{person}/{name}")
            else:
                vectors[person][name] = found.vector
    return vectors, missed


def pair_scores(vectors):
    """(same-person vs original, same-person among variants, different people) cosine lists."""
    to_original, among, different = [], [], []
    for person, vs in vectors.items():
        names = list(vs)
        for n in names[1:]:
            to_original.append(float(vs["original"] @ vs[n]))
        for a, b in itertools.combinations(names[1:], 2):
            among.append(float(vs[a] @ vs[b]))
    for p, q in itertools.combinations(vectors, 2):
        for a in vectors[p].values():
            for b in vectors[q].values():
                different.append(float(a @ b))
    return to_original, among, different


def describe(values) -> dict:
    a = np.asarray(values)
    return {"n": int(a.size), "min": round(float(a.min()), 4), "p5": round(float(np.percentile(a, 5)), 4),
            "median": round(float(np.median(a)), 4), "p95": round(float(np.percentile(a, 95)), 4),
            "max": round(float(a.max()), 4)}


def tiny_faces(fe, embedder, vectors, detector="auto", model_dirs=()) -> list:
    """Cosine of the 100 faces of scikit-image's LFW subset (real photographs of other people,
    25x25 grey, blown up to 150 px) to each person's original photo: how far the score can be
    trusted when a face is only a few dozen pixels across."""
    import cv2
    from skimage import data
    _, detect = fe.face._pick_detector(detector, model_dirs, [])
    out = []
    for im in data.lfw_subset()[:100]:
        rgb = np.repeat(cv2.resize(np.round(im * 255).astype(np.uint8), (150, 150),
                                   interpolation=cv2.INTER_CUBIC)[:, :, None], 3, axis=2)
        found = fe.embed_largest_face(rgb, embedder, detect) or fe.embed_largest_face(rgb, embedder, None)
        out += [float(found.vector @ vs["original"]) for vs in vectors.values()]
    return out


def calibrate(fe, embedder, detector="auto", model_dirs=(), tiny=True) -> dict:
    vectors, missed = embed_people(fe, embedder, detector, model_dirs)
    to_original, among, different = pair_scores(vectors)
    same = to_original + among
    gap = min(same) - max(different)
    per_person_worst = {p: round(min(float(vs["original"] @ v) for n, v in vs.items() if n != "original"), 4)
                        for p, vs in vectors.items()}
    return {"embedder": embedder.name, "people": sorted(vectors), "missed": missed,
            "same_vs_original": describe(to_original), "same_among_variants": describe(among),
            "different_people": describe(different), "gap": round(gap, 4),
            "threshold": round((min(same) + max(different)) / 2, 3),
            "worst_variant_per_person": per_person_worst,
            "tiny_faces_vs_people": describe(tiny_faces(fe, embedder, vectors, detector, model_dirs)) if tiny else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--embedder", default="dlib", choices=["auto", "dlib", "arcface"])
    p.add_argument("--detector", default="auto")
    p.add_argument("--model-dir", action="append", default=[], help="folder holding optional model files")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    fe = load_engine()
    embedder = fe.load_embedder(args.embedder, args.model_dir)
    r = calibrate(fe, embedder, args.detector, args.model_dir)
    print(f"embedder {r['embedder']}; people: {', '.join(r['people'])}")
    if r["missed"]:
        print("no face found in: " + ", ".join(r["missed"]))
    for key in ("same_vs_original", "same_among_variants", "different_people"):
        d = r[key]
        print(f"{key:22s} n={d['n']:4d}  min {d['min']:.3f}  p5 {d['p5']:.3f}  median {d['median']:.3f}  "
              f"p95 {d['p95']:.3f}  max {d['max']:.3f}")
    d = r["tiny_faces_vs_people"]
    print(f"{'tiny LFW faces (25 px) vs the people':22s} n={d['n']:4d}  min {d['min']:.3f}  median {d['median']:.3f}  "
          f"p95 {d['p95']:.3f}  max {d['max']:.3f}")
    print(f"worst variant vs its original, per person: {r['worst_variant_per_person']}")
    print(f"gap (lowest same-person - highest different-people): {r['gap']:+.3f}")
    print(f"threshold (middle of the gap): {r['threshold']:.3f}")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
