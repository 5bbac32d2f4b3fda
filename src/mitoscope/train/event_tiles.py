"""Ji et al.'s event-tile sampling: draw a labelled event, then one grid tile that contains it.

Lives in :mod:`mitoscope.train` so the trainers may use it (``train-detector`` with
``sampling = "event_tile"``, :mod:`mitoscope.train.detector`); :mod:`mitoscope.curate.crowd`
re-exports it, whose table gives the agreement per event (``papers/003_*``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError


class EventTileSampler:
    """Ji et al.'s "sampling strategy": draw an event, then one tile that contains it.

    Tiles form a grid of ``tile_px`` squares with stride ``stride_px`` over each image (the
    paper: 250 px, stride 125); a tile contains an event when the event's box lies inside it
    (its centre when the box does not fit). Every event is drawn with equal probability (or
    ``weights``), however many tiles contain it, and lands at a different place in the tile each
    time. :meth:`targets` gives the paper's tile regression score ``s_t = sum_i r_i a_i``
    (``r_i`` the share of event ``i``'s box inside the tile, ``a_i`` its agreement).

    Parameters
    ----------
    image : array of str (N,)
    x_px, y_px : arrays (N,)
        Event centres (level-0 px of their image).
    sizes : dict image -> (width, height)
    tile_px, stride_px : int
        In pixels of the images (convert a size in um with the images' pixel size).
    box_px : float
        Side of each event's box (Ji: events are 30-60 px at 40x).
    agreement : array (N,), optional
        Agreement scores (default 1).
    weights : array (N,), optional
        Sampling weight per event (default uniform).
    """

    def __init__(
        self,
        image: Sequence[str],
        x_px: Sequence[float],
        y_px: Sequence[float],
        sizes: dict[str, tuple[int, int]],
        *,
        tile_px: int = 250,
        stride_px: int = 125,
        box_px: float = 50.0,
        agreement: Sequence[float] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.image = np.asarray([str(v) for v in image], dtype=object)
        self.x = np.asarray(x_px, dtype=np.float64)
        self.y = np.asarray(y_px, dtype=np.float64)
        n = len(self.x)
        if len(self.image) != n or len(self.y) != n:
            raise InvalidInputError("EventTileSampler: image, x_px and y_px differ in length")
        if tile_px <= 0 or stride_px <= 0:
            raise InvalidInputError("tile_px and stride_px must be positive")
        self.sizes = {str(k): (int(v[0]), int(v[1])) for k, v in sizes.items()}
        missing = sorted(set(self.image.tolist()) - set(self.sizes))
        if missing:
            raise InvalidInputError(f"no size given for image {missing[0]!r}")
        self.tile, self.stride, self.half = int(tile_px), int(stride_px), 0.5 * float(box_px)
        self.agreement = np.ones(n) if agreement is None else np.asarray(agreement, dtype=float)
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        if len(w) != n or (w < 0).any() or not np.isfinite(w).all() or (n and w.sum() <= 0):
            raise InvalidInputError("weights must be finite, non-negative and not all zero")
        self.p = w / w.sum() if n else w

    def _origins(self, size: int) -> np.ndarray:
        last = max(size - self.tile, 0)
        o = np.arange(0, last + 1, self.stride)
        return o if o[-1] == last else np.append(o, last)

    def tiles_of(self, i: int) -> list[tuple[int, int]]:
        """Top-left corners of the grid tiles containing event ``i``."""
        w, h = self.sizes[str(self.image[i])]
        out = []
        for _axis, c, size in (("x", self.x[i], w), ("y", self.y[i], h)):
            o = self._origins(size)
            lo, hi = c - self.half, c + self.half
            inside = (o <= lo) & (o + self.tile >= hi)
            if not inside.any():  # a box larger than the tile / at the border: the centre
                inside = (o <= c) & (o + self.tile > c)
            out.append(o[inside])
        return [(int(a), int(b)) for a in out[0] for b in out[1]]

    def _tile_for(self, i: int, rng: np.random.Generator) -> tuple[int, int]:
        tiles = self.tiles_of(i)
        return tiles[int(rng.integers(len(tiles)))]

    def sample(self, n: int, *, seed: int = 0) -> list[tuple[int, str, int, int]]:
        """``n`` draws of ``(event index, image, tile x0, tile y0)``."""
        rng = np.random.default_rng(seed)
        if not len(self.x):
            return []
        events = rng.choice(len(self.x), size=int(n), p=self.p)
        out = []
        for i in events.tolist():
            x0, y0 = self._tile_for(i, rng)
            out.append((i, str(self.image[i]), x0, y0))
        return out

    def draw(self, rng: np.random.Generator) -> tuple[int, str, int, int]:
        """One draw ``(event index, image, tile x0, tile y0)`` with the caller's generator (a
        dataset seeds one per item, so each item is reproducible on its own)."""
        if not len(self.x):
            raise InvalidInputError("EventTileSampler: no events to draw from")
        i = int(rng.choice(len(self.x), p=self.p))
        x0, y0 = self._tile_for(i, rng)
        return i, str(self.image[i]), x0, y0

    def targets(self, image: str, x0: int, y0: int) -> float:
        """Ji's tile score ``s_t = sum_i r_i a_i`` over the events of ``image``."""
        sel = self.image == str(image)
        ex0, ex1 = self.x[sel] - self.half, self.x[sel] + self.half
        ey0, ey1 = self.y[sel] - self.half, self.y[sel] + self.half
        ix = np.clip(np.minimum(ex1, x0 + self.tile) - np.maximum(ex0, x0), 0, None)
        iy = np.clip(np.minimum(ey1, y0 + self.tile) - np.maximum(ey0, y0), 0, None)
        r = ix * iy / max((2 * self.half) ** 2, 1e-9)
        return float((r * self.agreement[sel]).sum())


__all__ = ["EventTileSampler"]
