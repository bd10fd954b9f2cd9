"""Procedurally generated texture datasets for the offline demo.

Two named families, deliberately different so that "pre-train on one, fine-tune on the
other" is a real transfer problem, like ImageNet -> DTD:

* ``textures`` (the downstream demo task, DTD-like): sinusoidal gratings, rotated
  checkerboards, blob fields and oriented band-pass noise.
* ``textures_source`` (pre-training the demo backbone): plaids, concentric rings, square-wave
  stripes with a duty cycle, rotated dot lattices and zig-zags; more classes by default.

A class is a pattern family plus class-specific frequency / orientation / shape parameters
(spread by a low-discrepancy sequence inside each family) and a colour palette shared with
other classes. Every image draws its own phase, position, frequency and orientation jitter,
colours, contrast, brightness and pixel noise. Palettes overlap across classes and jitter
makes neighbouring classes overlap, so colour statistics alone do not separate the classes
and a linear probe on pixels is poor (random phase averages every class mean image to
grey), while a small CNN learns the task in a few epochs.

Everything is a function of ``(class_seed, seed, split, class)`` through numpy's
``default_rng``: the same arguments give byte-identical arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from robustft.data.format import SplitData
from robustft.data.spec import Built, PrepareContext
from robustft.data.splits import stratified_holdout

__all__ = ["FAMILIES", "GENERATOR_VERSION", "build_generated", "generate"]

#: Bump when the pixels a given seed produces change (recorded in every manifest).
GENERATOR_VERSION = 1

_GOLD = 0.6180339887498949
_SILVER = 0.3819660112501051

# Colour palettes (foreground, background), shared between classes on purpose.
_PALETTES = np.array(
    [
        [[0.85, 0.80, 0.70], [0.25, 0.20, 0.15]],  # cream on brown
        [[0.75, 0.80, 0.90], [0.15, 0.20, 0.35]],  # pale blue on navy
        [[0.80, 0.85, 0.70], [0.20, 0.30, 0.15]],  # pale green on olive
        [[0.90, 0.75, 0.75], [0.35, 0.15, 0.20]],  # pink on maroon
    ]
)


def _coords(res: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:res, 0:res].astype(np.float64)
    return (x + 0.5) / res, (y + 0.5) / res


def _rot(x: np.ndarray, y: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(theta), math.sin(theta)
    return x * c + y * s, -x * s + y * c


# ---- pattern functions: (params, per-image rng, resolution) -> float map in [-1, 1] ----------


def _grating(p: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    x, y = _coords(res)
    u, _ = _rot(x, y, p["theta"])
    return np.sin(2 * np.pi * p["freq"] * u + rng.uniform(0, 2 * np.pi))


def _checker(p: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    x, y = _coords(res)
    u, v = _rot(x, y, p["theta"])
    f = p["freq"]
    s = np.sin(2 * np.pi * f * u + rng.uniform(0, 2 * np.pi)) * np.sin(
        2 * np.pi * f * p["aspect"] * v + rng.uniform(0, 2 * np.pi)
    )
    return np.tanh(4.0 * s)


def _blobs(p: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    x, y = _coords(res)
    n = max(1, rng.poisson(p["density"]))
    cx, cy = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    r = p["radius"] * np.exp(rng.normal(0, 0.15, n))
    # periodic distance so blobs wrap around like a texture
    dx = np.abs(x[None] - cx[:, None, None])
    dy = np.abs(y[None] - cy[:, None, None])
    dx, dy = np.minimum(dx, 1 - dx), np.minimum(dy, 1 - dy)
    # elongation along the class orientation
    u, v = _rot(dx, dy, p["theta"])
    d2 = (u / p["elong"]) ** 2 + (v * p["elong"]) ** 2
    field = np.exp(-d2 / (2 * r[:, None, None] ** 2)).sum(0)
    return np.tanh(2.0 * field) * 2 - 1


def _bandnoise(p: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    noise = rng.normal(size=(res, res))
    fy = np.fft.fftfreq(res)[:, None] * res
    fx = np.fft.fftfreq(res)[None, :] * res
    c, s = math.cos(p["theta"]), math.sin(p["theta"])
    along = fx * c + fy * s
    across = -fx * s + fy * c
    bw = p["bandwidth"]
    filt = np.exp(-((np.abs(along) - p["freq"]) ** 2) / (2 * bw**2)) * np.exp(
        -(across**2) / (2 * (bw * p["aniso"]) ** 2)
    )
    out = np.real(np.fft.ifft2(np.fft.fft2(noise) * filt))
    out /= out.std() + 1e-8
    return np.tanh(out)


def _plaid(p: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    x, y = _coords(res)
    u1, _ = _rot(x, y, p["theta"])
    u2, _ = _rot(x, y, p["theta"] + p["delta"])
    return 0.5 * (
        np.sin(2 * np.pi * p["freq"] * u1 + rng.uniform(0, 2 * np.pi))
        + np.sin(2 * np.pi * p["freq2"] * u2 + rng.uniform(0, 2 * np.pi))
    )


def _rings(p: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    x, y = _coords(res)
    cx, cy = rng.uniform(0.2, 0.8, 2)
    dx, dy = _rot(x - cx, y - cy, p["theta"])
    r = np.sqrt((dx * p["elong"]) ** 2 + (dy / p["elong"]) ** 2)
    return np.sin(2 * np.pi * p["freq"] * r + rng.uniform(0, 2 * np.pi))


def _square(p: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    x, y = _coords(res)
    u, _ = _rot(x, y, p["theta"])
    phase = (p["freq"] * u + rng.uniform(0, 1)) % 1.0
    return np.where(phase < p["duty"], 0.9, -0.9)


def _lattice(p: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    x, y = _coords(res)
    u, v = _rot(x, y, p["theta"])
    f = p["freq"]
    du = ((u * f + rng.uniform(0, 1)) % 1.0) - 0.5
    dv = ((v * f + rng.uniform(0, 1)) % 1.0) - 0.5
    return np.exp(-(du**2 + dv**2) / (2 * p["dot"] ** 2)) * 2 - 1


def _zigzag(p: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    x, y = _coords(res)
    u, v = _rot(x, y, p["theta"])
    warp = p["amp"] * np.abs(((v * p["freq2"] + rng.uniform(0, 1)) % 1.0) * 2 - 1)
    return np.sin(2 * np.pi * p["freq"] * (u + warp) + rng.uniform(0, 2 * np.pi))


# ---- class parameter tables --------------------------------------------------------------------


def _lds(j: int, mult: float, offset: float) -> float:
    """Low-discrepancy position of member ``j`` of a family in [0, 1)."""
    return (offset + j * mult) % 1.0


def _log_range(t: float, lo: float, hi: float) -> float:
    return math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))


def _params_common(j: int, rng: np.random.Generator, lo: float, hi: float) -> dict:
    return {
        "theta": math.pi * _lds(j, _GOLD, rng.uniform()),
        "freq": _log_range(_lds(j, _SILVER, rng.uniform()), lo, hi),
    }


def _p_grating(j, rng):
    return _params_common(j, rng, 2.0, 8.0)


def _p_checker(j, rng):
    return {**_params_common(j, rng, 1.5, 5.0), "aspect": float(rng.choice([1.0, 1.5, 2.0]))}


def _p_blobs(j, rng):
    return {
        "theta": math.pi * _lds(j, _GOLD, rng.uniform()),
        "density": _log_range(_lds(j, _SILVER, rng.uniform()), 4, 30),
        "radius": float(rng.uniform(0.03, 0.09)),
        "elong": float(rng.uniform(1.0, 2.5)),
    }


def _p_bandnoise(j, rng):
    return {
        **_params_common(j, rng, 2.0, 9.0),
        "bandwidth": float(rng.uniform(0.6, 1.4)),
        "aniso": float(rng.uniform(0.5, 2.5)),
    }


def _p_plaid(j, rng):
    p = _params_common(j, rng, 2.0, 7.0)
    p["delta"] = float(rng.uniform(math.pi / 6, math.pi / 2))
    p["freq2"] = p["freq"] * float(rng.uniform(0.7, 1.4))
    return p


def _p_rings(j, rng):
    return {**_params_common(j, rng, 2.0, 7.0), "elong": float(rng.uniform(1.0, 1.8))}


def _p_square(j, rng):
    return {**_params_common(j, rng, 2.0, 6.0), "duty": float(rng.uniform(0.2, 0.6))}


def _p_lattice(j, rng):
    return {**_params_common(j, rng, 2.0, 6.0), "dot": float(rng.uniform(0.1, 0.25))}


def _p_zigzag(j, rng):
    return {
        **_params_common(j, rng, 2.0, 6.0),
        "freq2": float(rng.uniform(1.5, 4.0)),
        "amp": float(rng.uniform(0.08, 0.2)),
    }


PatternFn = Callable[[dict, np.random.Generator, int], np.ndarray]
ParamFn = Callable[[int, np.random.Generator], dict]

#: family set name -> ordered list of (pattern name, pattern function, class-parameter function)
FAMILIES: dict[str, list[tuple[str, PatternFn, ParamFn]]] = {
    "textures": [
        ("grating", _grating, _p_grating),
        ("checker", _checker, _p_checker),
        ("blobs", _blobs, _p_blobs),
        ("bandnoise", _bandnoise, _p_bandnoise),
    ],
    "textures_source": [
        ("plaid", _plaid, _p_plaid),
        ("rings", _rings, _p_rings),
        ("square", _square, _p_square),
        ("lattice", _lattice, _p_lattice),
        ("zigzag", _zigzag, _p_zigzag),
    ],
}

_SPLIT_CODE = {"train": 1, "test": 2}
_SET_CODE = {"textures": 11, "textures_source": 12}


def class_table(family_set: str, num_classes: int, class_seed: int) -> list[dict]:
    """Parameters of every class (independent of ``num_classes``: class c is always the
    same texture, adding classes only appends)."""
    fams = FAMILIES[family_set]
    table = []
    for c in range(num_classes):
        fi, j = c % len(fams), c // len(fams)
        name, _, pfn = fams[fi]
        # offsets of the low-discrepancy sequences are per family, not per class
        fam_rng = np.random.default_rng([class_seed, _SET_CODE[family_set], fi])
        p = pfn(j, fam_rng)
        p_rng = np.random.default_rng([class_seed, _SET_CODE[family_set], fi, j, 7])
        p["palette"] = int(p_rng.integers(len(_PALETTES)))
        p["family"] = name
        p["label"] = f"{name}_{j}"
        table.append(p)
    return table


def _render(p: dict, fn: PatternFn, rng: np.random.Generator, res: int, noise: float) -> np.ndarray:
    q = dict(p)
    # nuisance jitter: orientation +-~10 deg, frequency +-~15 %
    q["theta"] = p["theta"] + rng.normal(0, math.radians(10))
    if "freq" in q:
        q["freq"] = p["freq"] * math.exp(rng.normal(0, 0.15))
    s = fn(q, rng, res)
    fg, bg = _PALETTES[p["palette"]] + rng.normal(0, 0.12, (2, 3))
    if rng.uniform() < 0.5:
        fg, bg = bg, fg
    contrast = rng.uniform(0.35, 1.0)
    t = 0.5 + 0.5 * contrast * s
    img = bg[None, None, :] + (fg - bg)[None, None, :] * t[..., None]
    img += rng.normal(0, 0.08) + rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def generate(
    family_set: str,
    num_classes: int,
    per_class: int,
    resolution: int,
    seed: int,
    split: str,
    *,
    class_seed: int = 0,
    noise: float = 0.06,
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each class as ``(uint8 N x R x R x 3, int64 N)``, class-major."""
    if family_set not in FAMILIES:
        raise KeyError(f"unknown texture family set {family_set!r}; choose from {sorted(FAMILIES)}")
    fams = {name: fn for name, fn, _ in FAMILIES[family_set]}
    table = class_table(family_set, num_classes, class_seed)
    imgs = np.empty((num_classes * per_class, resolution, resolution, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    for c, p in enumerate(table):
        rng = np.random.default_rng([seed, _SET_CODE[family_set], _SPLIT_CODE[split], c])
        for i in range(per_class):
            imgs[c * per_class + i] = _render(p, fams[p["family"]], rng, resolution, noise)
    return imgs, labels


def build_generated(family_set: str) -> Callable[[PrepareContext], Built]:
    """The registry ``build`` function for one family set."""

    def build(ctx: PrepareContext) -> Built:
        o = ctx.options
        nc, per, res = int(o["num_classes"]), int(o["per_class"]), ctx.resolution
        test_per = int(o["test_per_class"]) if o["test_per_class"] is not None else max(1, per // 2)
        if nc < 2 or per < 1:
            raise ValueError(f"{ctx.name}: need num_classes >= 2 and per_class >= 1")
        kw = {"class_seed": int(o["class_seed"]), "noise": float(o["noise"])}
        x, y = generate(family_set, nc, per, res, ctx.seed, "train", **kw)
        xt, yt = generate(family_set, nc, test_per, res, ctx.seed, "test", **kw)
        tr, va = stratified_holdout(y, float(o["val_fraction"]), ctx.seed)
        table = class_table(family_set, nc, int(o["class_seed"]))
        splits = {
            "train": SplitData(x[tr], y[tr]),
            "val": SplitData(x[va], y[va]),
            "test": SplitData(xt, yt),
        }
        return Built(
            classes=[p["label"] for p in table],
            splits=splits,
            notes=[
                (
                    f"generated {family_set}: {nc} classes x {per} train-pool images "
                    f"(stratified {float(o['val_fraction']):.0%} val) + {test_per} test "
                    "images per class; images depend only on (class_seed, seed)"
                )
            ],
            extra={
                "source": {
                    "generator": family_set,
                    "generator_version": GENERATOR_VERSION,
                    "class_seed": int(o["class_seed"]),
                    "families": [name for name, _, _ in FAMILIES[family_set]],
                }
            },
        )

    return build
