#!/usr/bin/env python3
"""Write each example workflow's thumbnail (example_workflows/<name>.jpg) from a screenshot of
the real canvas after a run, with the template's one-line description written under it.

    .venv/bin/python -m pytest tests/test_frontend.py -k every_template --basetemp /tmp/standin-shots
    .venv/bin/python dev/make_thumbnails.py /tmp/standin-shots

The canvas test saves <name>_after_run.png (1920x1080: the template run with tiny models, its
reference photo, prepared crop and video previews on the nodes). ComfyUI's template browser
shows /api/workflow_templates/<pack>/<name>.jpg as the card image and the file name as its text
(frontends 1.32 to 1.48 read no description for a custom node's template), so the description
goes into the picture.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

SIZE = (640, 480)
CAPTION_H = 176  # the card shows the picture ~250 px wide: the caption must stay legible
# The part of the 1920x1080 screenshot the graph opens in: right of the side bar, under the top bars.
GRAPH_BOX = (59, 125, 1920, 1080)


def thumbnail(screenshot: str, description: str):
    from PIL import Image, ImageDraw, ImageFont
    shot = Image.open(screenshot).convert("RGB").crop(GRAPH_BOX)
    width, height = SIZE[0], SIZE[1] - CAPTION_H
    shot.thumbnail((width, height), Image.LANCZOS)
    out = Image.new("RGB", SIZE, (24, 24, 24))
    out.paste(shot, ((width - shot.width) // 2, (height - shot.height) // 2))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=31)
    words, lines, line = description.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) > SIZE[0] - 32 and line:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    draw.rectangle([0, height, SIZE[0], SIZE[1]], fill=(40, 40, 48))
    if len(lines) > 4:
        raise ValueError(f"description too long for the thumbnail: {description!r}")
    top = height + (CAPTION_H - 40 * len(lines)) // 2
    for i, text in enumerate(lines):
        draw.text((16, top + 40 * i), text, font=font, fill=(235, 235, 235))
    return out


def main(argv=None) -> int:
    from make_workflows import WORKFLOWS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shots", help="folder (searched recursively) with <name>_after_run.png screenshots")
    parser.add_argument("--out", default=os.path.join(ROOT, "example_workflows"))
    args = parser.parse_args(argv)
    missing = []
    for name, (_, _, description) in WORKFLOWS.items():
        found = sorted(glob.glob(os.path.join(args.shots, "**", f"{name}_after_run.png"), recursive=True), key=os.path.getmtime)
        if not found:
            missing.append(name)
            continue
        path = os.path.join(args.out, f"{name}.jpg")
        thumbnail(found[-1], description).save(path, quality=85, optimize=True)
        print(path)
    if missing:
        print("no screenshot for: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
