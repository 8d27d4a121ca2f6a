"""A readable chart of identity similarity over a video's frames, drawn with Pillow.

Similarity per frame as a line with dots (green at or above the threshold, red below), the
threshold as a dashed line, the mean as a dotted one, and frames without a face as grey
bands along the bottom marked "no face". Several people: one line per person in its own
colour with a legend, dots ringed red below the threshold, and the frames where people
swapped places or two faces look like one reference shaded. The y axis runs from a round value below the
lowest point (and the threshold) to 1.0, so charts of different seeds read alike.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BG = (250, 250, 252)
PANEL = (255, 255, 255)
GRID = (228, 230, 236)
AXIS = (90, 94, 104)
TEXT = (34, 38, 46)
MUTED = (110, 116, 128)
LINE = (52, 101, 164)
GOOD = (46, 150, 84)
BAD = (212, 58, 50)
THRESH = (212, 58, 50)
MEAN = (52, 101, 164)
NOFACE = (205, 208, 215)
# One colour per person (blue, orange, purple, teal: apart for common colour blindness too),
# and the shading of frames where people swapped places or two faces look like one reference.
PEOPLE = ((52, 101, 164), (230, 126, 34), (142, 68, 173), (22, 160, 133))
SWAPPED = (253, 224, 196)
BLENDED = (232, 216, 242)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _text_w(draw, text, font) -> float:
    return draw.textlength(text, font=font)


def _dashed_hline(draw, x0, x1, y, color, dash=8, gap=6, width=2):
    x = x0
    while x < x1:
        draw.line([(x, y), (min(x + dash, x1), y)], fill=color, width=width)
        x += dash + gap


def y_range(values, threshold) -> tuple[float, float]:
    lows = [v for v in values if v is not None] + [threshold]
    lo = min(lows) - 0.05
    lo = math.floor(lo * 10) / 10
    return max(-1.0, min(lo, 0.9)), 1.0


def plot_scores(per_frame, threshold: float, title: str = "", subtitle: str = "",
                width: int = 1024, height: int = 400) -> np.ndarray:
    """uint8 RGB [height, width, 3] chart of ``per_frame`` (floats, None = no face)."""
    return _chart([(per_frame, LINE, None)], threshold, title, subtitle, width, height)


def _chart(series, threshold: float, title: str, subtitle: str, width: int, height: int,
           bands=(), legend=()) -> np.ndarray:
    """The chart: ``series`` [(per_frame, colour, dot colour or None for green/red by threshold)],
    ``bands`` [(frames, fill, label)] shaded behind the lines besides the no-face frames,
    ``legend`` [(colour, number, name, figures)] in a row above the panel; names are shortened
    (from the front: a file name's end tells more) so that every entry fits."""
    scale = max(1.0, width / 1024)
    f_title, f_label, f_small = _font(int(20 * scale)), _font(int(14 * scale)), _font(int(12 * scale))
    img = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(img)

    left, right = int(64 * scale), int(24 * scale)
    top, bottom = int((66 + (24 if legend else 0)) * scale), int(48 * scale)
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    d.rectangle([x0, y0, x1, y1], fill=PANEL, outline=GRID)
    d.text((left, int(10 * scale)), title, font=f_title, fill=TEXT)
    if subtitle:
        d.text((left, int(36 * scale)), subtitle, font=f_label, fill=MUTED)
    lx, ly = float(left), 62 * scale
    names = [name for _, _, name, _ in legend]
    cut = [False] * len(legend)

    def entry(k):
        return f"{legend[k][1]} {'…' if cut[k] else ''}{names[k]}  {legend[k][3]}"

    # The longest name loses a character until the row fits.
    while legend and sum(52 * scale + _text_w(d, entry(k), f_label) for k in range(len(legend))) > width - right - left:
        k = max(range(len(legend)), key=lambda k: _text_w(d, entry(k), f_label))
        if len(names[k]) <= 1:
            break
        names[k], cut[k] = names[k][1:], True
    for k, (colour, _, _, _) in enumerate(legend):
        text = entry(k)
        d.line([(lx, ly + 8 * scale), (lx + 22 * scale, ly + 8 * scale)], fill=colour, width=max(2, int(3 * scale)))
        d.text((lx + 28 * scale, ly), text, font=f_label, fill=TEXT)
        lx += 28 * scale + _text_w(d, text, f_label) + 24 * scale

    n = max((len(values) for values, _, _ in series), default=0)
    everything = [v for values, _, _ in series for v in values]
    lo, hi = y_range(everything, threshold)

    pad = 12 * scale  # keeps the first and last dots and the 1.0 line inside the panel

    def px(i):
        return x0 + pad + (x1 - x0 - 2 * pad) * (0.5 if n <= 1 else i / (n - 1))

    def py(v):
        return y1 - (y1 - y0 - pad) * (min(max(v, lo), hi) - lo) / (hi - lo)

    # Grid and y labels every 0.1 (0.2 when the range is wide).
    step = 0.1 if hi - lo <= 1.0 else 0.2
    k = 0
    while lo + k * step <= hi + 1e-9:
        v = lo + k * step
        y = py(v)
        d.line([(x0, y), (x1, y)], fill=GRID, width=1)
        label = f"{v:.1f}"
        d.text((x0 - 8 * scale - _text_w(d, label, f_small), y - 7 * scale), label, font=f_small, fill=MUTED)
        k += 1

    # Frames without any face, then the other bands: shaded the width of one frame, labelled once.
    half = (x1 - x0 - 2 * pad) / max(1, n - 1) / 2 if n > 1 else (x1 - x0) / 2
    missing = [i for i in range(n) if all(i >= len(values) or values[i] is None for values, _, _ in series)]
    for frames, fill, label in [(missing, NOFACE, "no face"), *bands]:
        for i in frames:
            d.rectangle([max(x0, px(i) - half), y0 + 1, min(x1, px(i) + half), y1 - 1], fill=fill)
        if frames:
            first = frames[0]
            d.text((min(max(x0 + 4, px(first) - _text_w(d, label, f_small) / 2), x1 - 60 * scale),
                    y1 - 18 * scale), label, font=f_small, fill=AXIS)

    # Threshold and mean.
    ty = py(threshold)
    _dashed_hline(d, x0, x1, ty, THRESH, width=max(1, int(2 * scale)))
    tl = f"threshold {threshold:.2f}"
    d.text((x1 - _text_w(d, tl, f_small) - 6 * scale, ty - 17 * scale), tl, font=f_small, fill=THRESH)
    for values, colour, _ in series:
        scored = [v for v in values if v is not None]
        if not scored:
            continue
        mean = float(np.mean(scored))
        my = py(mean)
        x = x0
        while x < x1:
            d.line([(x, my), (min(x + 2, x1), my)], fill=MEAN if len(series) == 1 else colour, width=1)
            x += 6
        if len(series) == 1:  # several people's means are in the legend
            ml = f"mean {mean:.3f}"
            # Above the line, unless that would cover the top of the chart where good scores sit.
            ly = my + 4 * scale if my - y0 < 30 * scale else my - 17 * scale
            d.text((x0 + 6 * scale, ly), ml, font=f_small, fill=MEAN)

    # The series: segments between consecutive frames that both have a face.
    w_line = max(2, int(2.5 * scale))
    r = max(2.5, min(5.0, (x1 - x0) / max(n, 1) / 3)) * (1 if scale == 1 else scale)
    for values, colour, dot in series:
        for i in range(1, len(values)):
            a, b = values[i - 1], values[i]
            if a is not None and b is not None:
                d.line([(px(i - 1), py(a)), (px(i), py(b))], fill=colour, width=w_line)
        for i, v in enumerate(values):
            if v is None:
                continue
            if dot is None:
                d.ellipse([px(i) - r, py(v) - r, px(i) + r, py(v) + r], fill=GOOD if v >= threshold else BAD,
                          outline=PANEL)
            else:  # the person's colour; a red ring below the threshold
                low = v < threshold
                d.ellipse([px(i) - r, py(v) - r, px(i) + r, py(v) + r], fill=dot, outline=BAD if low else PANEL,
                          width=max(1, int(2 * scale)) if low else 1)

    # x axis: frame numbers at round steps.
    d.line([(x0, y1), (x1, y1)], fill=AXIS, width=1)
    if n:
        target = max(1, (n - 1) // 8)
        nice = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 10**9) if s >= target)
        for i in list(range(0, n, nice)) + ([n - 1] if (n - 1) % nice else []):
            x = px(i)
            d.line([(x, y1), (x, y1 + 4 * scale)], fill=AXIS, width=1)
            label = str(i)
            d.text((x - _text_w(d, label, f_small) / 2, y1 + 7 * scale), label, font=f_small, fill=MUTED)
    xl = "frame"
    d.text(((x0 + x1) / 2 - _text_w(d, xl, f_label) / 2, height - 22 * scale), xl, font=f_label, fill=AXIS)
    return np.array(img, dtype=np.uint8)


def plot_score(score, width: int = 1024, height: int = 400) -> np.ndarray:
    """Chart of an IdentityScore (face_embed.score_video's result)."""
    f = (lambda v: "n/a" if v is None else f"{v:.3f}")
    title = f"Identity similarity  ·  mean {f(score.mean)}   min {f(score.min)}   p10 {f(score.low)}"
    subtitle = (f"{score.embedder} cosine vs reference · faces in {score.faces}/{score.frames} frames"
                f" · {score.below} below threshold")
    return plot_scores(score.per_frame, score.threshold, title, subtitle, width, height)


def plot_people(score, width: int = 1024, height: int = 400) -> np.ndarray:
    """Chart of a PeopleScore (face_embed.score_people's result): one line per person, a legend
    with each person's mean, and the swapped and blended frames shaded."""
    series, legend = [], []
    for k, (name, person) in enumerate(zip(score.references, score.people)):
        colour = PEOPLE[k % len(PEOPLE)]
        series.append((person.per_frame, colour, colour))
        mean = "n/a" if person.mean is None else f"{person.mean:.3f}"
        legend.append((colour, k + 1, name, f"mean {mean}"))
    title = f"Identity similarity  ·  {len(score.people)} people"
    subtitle = (f"{score.embedder} cosine, each face matched to one reference · frames swapped: "
                f"{len(score.swapped_frames)}, blended: {len(score.blended_frames)}")
    bands = [(score.swapped_frames, SWAPPED, "swapped"), (score.blended_frames, BLENDED, "blended")]
    return _chart(series, score.threshold, title, subtitle, width, height, bands, legend)
