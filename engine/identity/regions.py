"""Where in the video each identity may act: regions and the query groups they make.

A region is a simple layout (left half, right third, ...), a mask (one still or one per video
frame, any resolution), or both (their intersection). Video tokens outside an identity's region
do not attend to that identity's reference keys at all: the patch groups the video's queries by
which identities they may see and runs one attention per group over [video; those references].
No [queries x keys] mask is ever built, every group keeps the attention backend, and a token's
output cannot depend on a reference its group does not see.

Imports without ComfyUI (tested alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# (x0, x1, y0, y1) as fractions of the frame; a token belongs to a layout when its centre does.
LAYOUTS = {
    "whole frame": None,
    "left half": (0.0, 0.5, 0.0, 1.0),
    "right half": (0.5, 1.0, 0.0, 1.0),
    "left third": (0.0, 1 / 3, 0.0, 1.0),
    "middle third": (1 / 3, 2 / 3, 0.0, 1.0),
    "right third": (2 / 3, 1.0, 0.0, 1.0),
    "top half": (0.0, 1.0, 0.0, 0.5),
    "bottom half": (0.0, 1.0, 0.5, 1.0),
}

# The Wan 2.1 VAE: latent frame 0 is video frame 0, latent frame t >= 1 covers frames 4t-3 .. 4t.
TEMPORAL_STRIDE = 4


class RegionError(ValueError):
    """A region that cannot be used; the message says what to connect instead."""


@dataclass(frozen=True, eq=False)
class Region:
    layout: str = "whole frame"
    mask: torch.Tensor | None = None     # [F, H, W] in [0, 1]; F = 1: the same for every frame

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise RegionError(f"Unknown layout '{self.layout}'; choose one of: {', '.join(LAYOUTS)}.")
        if self.mask is not None:
            m = self.mask
            if not isinstance(m, torch.Tensor) or m.ndim not in (2, 3) or m.shape[-1] < 1 or m.shape[-2] < 1:
                raise RegionError("A region mask must be a MASK ([frames, height, width] or [height, width]).")
            if m.numel() == 0 or not torch.isfinite(m).all():
                raise RegionError("The region mask is empty or holds NaN / infinite values.")
            m = m.detach().to("cpu", torch.float32)
            object.__setattr__(self, "mask", m.unsqueeze(0) if m.ndim == 2 else m)
            if not (self.mask >= 0.5).any():
                raise RegionError("The region mask is empty (no pixel >= 0.5): this person could "
                                  "appear nowhere. Paint the area where they should be, or "
                                  "disconnect the mask.")

    @property
    def everywhere(self) -> bool:
        return self.mask is None and LAYOUTS[self.layout] is None

    def describe(self) -> str:
        parts = [] if LAYOUTS[self.layout] is None else [self.layout]
        if self.mask is not None:
            kind = "still mask" if self.mask.shape[0] == 1 else f"mask of {self.mask.shape[0]} frames"
            parts.append(kind)
        return " and ".join(parts) or "whole frame"

    def tokens(self, frame_index, grid_h: int, grid_w: int) -> torch.Tensor:
        """Bool [len(frame_index), grid_h, grid_w]: which video tokens lie inside.
        ``frame_index`` holds the latent frame numbers of the tokens' frames (a context window
        sees only some)."""
        frames = len(frame_index)
        inside = torch.ones((frames, grid_h, grid_w), dtype=torch.bool)
        box = LAYOUTS[self.layout]
        if box is not None:
            x0, x1, y0, y1 = box
            xs = (torch.arange(grid_w, dtype=torch.float64) + 0.5) / grid_w
            ys = (torch.arange(grid_h, dtype=torch.float64) + 0.5) / grid_h
            inside &= ((ys >= y0) & (ys < y1)).view(1, -1, 1) & ((xs >= x0) & (xs < x1)).view(1, 1, -1)
        if self.mask is not None:
            inside &= self._mask_tokens(frame_index, grid_h, grid_w)
        return inside

    def _mask_tokens(self, frame_index, grid_h, grid_w):
        m = self.mask
        if m.shape[0] == 1:
            per_frame = m.expand(len(frame_index), -1, -1)
        else:
            last = m.shape[0] - 1
            rows = []
            for t in frame_index:
                t = int(t)
                lo, hi = (0, 0) if t == 0 else (TEMPORAL_STRIDE * t - TEMPORAL_STRIDE + 1, TEMPORAL_STRIDE * t)
                # A person may be anywhere their frames put them: the union over the latent
                # frame's video frames. Frames past the mask's end keep its last frame.
                lo, hi = min(lo, last), min(hi, last)
                rows.append(m[lo:hi + 1].amax(dim=0))
            per_frame = torch.stack(rows)
        small = F.interpolate(per_frame.unsqueeze(1), size=(grid_h, grid_w), mode="area").squeeze(1)
        return small >= 0.5


@dataclass(frozen=True, eq=False)
class QueryGroup:
    index: torch.Tensor     # video token positions (long), in order
    allowed: tuple          # which identities (positions in the cache's spans) these tokens see


def query_groups(regions, frame_index, grid_h: int, grid_w: int, device=None):
    """Group the video tokens by the set of identities they may attend to.

    ``regions``: one Region or None (everywhere) per identity. Returns None when every token
    sees every identity (the plain, ungrouped path), else the groups, which together hold
    every token once."""
    n = len(regions)
    if all(r is None or r.everywhere for r in regions):
        return None
    if n > 62:
        raise RegionError(f"{n} identities with regions; at most 62 are supported.")
    count = len(frame_index) * grid_h * grid_w
    bits = torch.zeros(count, dtype=torch.int64)
    for j, region in enumerate(regions):
        inside = (torch.ones(count, dtype=torch.bool) if region is None or region.everywhere
                  else region.tokens(frame_index, grid_h, grid_w).reshape(-1))
        bits |= inside.to(torch.int64) << j
    patterns = torch.unique(bits).tolist()
    full = (1 << n) - 1
    if patterns == [full]:
        return None
    groups = []
    for p in patterns:
        index = (bits == p).nonzero().squeeze(1)
        groups.append(QueryGroup(index.to(device) if device is not None else index,
                                 tuple(j for j in range(n) if p >> j & 1)))
    return tuple(groups)
