"""Procedural 3D solid textures: checker, stripes, bricks and value-noise mixes with per-surface palettes.

A solid texture is a function of a 3D point in the surface's own frame (metres), so a surface
looks the same from every view and a moving object carries its texture with it: what a matcher
needs to find correspondences across frames. Everything is vectorised over pixels (torch) and
deterministic: the noise is a hashed integer lattice, no global random state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from data.synth.primitives import dot3

# Pattern kinds (index into TextureParams.kind).
CHECKER, STRIPES, BRICKS, NOISE = 0, 1, 2, 3
PATTERN_NAMES = ("checker", "stripes", "bricks", "noise")

_MASK32 = 0xFFFFFFFF


@dataclass
class TextureParams:
    """Texture of one surface (a room face or an object).

    Attributes:
        kind: pattern index (CHECKER, STRIPES, BRICKS, NOISE).
        colors: [3, 3] float RGB in [0, 1] (linear): two pattern colours and a noise colour.
        scale: pattern period in metres.
        direction: [3] unit vector, the stripes' normal direction.
        noise_amount: in [0, 1], how much the fractal noise blends toward colors[2].
        seed: integer seed of this surface's noise lattice.
    """

    kind: int
    colors: np.ndarray
    scale: float
    direction: np.ndarray
    noise_amount: float
    seed: int


def random_texture(
    rng: np.random.Generator,
    kinds: tuple[int, ...] = (CHECKER, STRIPES, BRICKS, NOISE),
    scale_range: tuple[float, float] = (0.08, 0.5),
) -> TextureParams:
    """Draw a texture: a random pattern kind, a random 3-colour palette, a random scale."""
    hue = rng.uniform(0.0, 1.0)
    colors = np.stack(
        [
            _hsv_to_rgb((hue + rng.normal(0.0, 0.08)) % 1.0, rng.uniform(0.2, 0.9), rng.uniform(0.25, 0.95))
            for _ in range(3)
        ]
    )
    colors[1] = _hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.8), rng.uniform(0.1, 0.9))
    direction = rng.normal(size=3)
    return TextureParams(
        kind=int(rng.choice(kinds)),
        colors=colors,
        scale=float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1])))),
        direction=direction / np.linalg.norm(direction),
        noise_amount=float(rng.uniform(0.15, 0.6)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def hash3(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Integer lattice hash -> float in [0, 1). All inputs int64 of one shape (seed broadcasts)."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791) ^ (seed * 2654435761)
    h = h & _MASK32
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & _MASK32
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & _MASK32
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).to(torch.float32) / float(0x1000000)


def value_noise(p: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Smooth value noise in [0, 1]: hashed lattice values, trilinear with smoothstep weights.

    Args:
        p: [N, 3] float32 points (lattice units).
        seed: [N] int64 per-point lattice seed.

    Returns:
        [N] float32.
    """
    base = torch.floor(p)
    f = p - base
    w = f * f * (3.0 - 2.0 * f)
    i = base.to(torch.int64)
    out = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            for dz in (0, 1):
                wz = w[:, 2] if dz else 1.0 - w[:, 2]
                out = out + wx * wy * wz * hash3(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def fbm(p: torch.Tensor, seed: torch.Tensor, octaves: int = 3) -> torch.Tensor:
    """Fractal sum of ``octaves`` value-noise octaves (frequency x2, amplitude x0.5), in [0, 1]."""
    total = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total = total + amp * value_noise(p * (2.0**o), seed + 7919 * o)
        norm += amp
        amp *= 0.5
    return total / norm


def _checker(q: torch.Tensor) -> torch.Tensor:
    f = torch.floor(q)
    i = (f[:, 0] + f[:, 1] + f[:, 2]).to(torch.int64)
    return (i & 1).to(q.dtype)


def _stripes(q: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    s = torch.sin(2.0 * torch.pi * dot3(q, direction))
    return torch.clamp(0.5 + 1.5 * s, 0.0, 1.0)  # sharpened sine: crisp but anti-aliased edges


def _bricks(q: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    # Courses along y (height 1 unit), bricks 2 units long along x + z, every other course offset.
    row = torch.floor(q[:, 1])
    along = 0.5 * (q[:, 0] + q[:, 2]) + 0.5 * (row.to(torch.int64) & 1).to(q.dtype)
    col = torch.floor(along)
    fy, fx = q[:, 1] - row, along - col
    mortar = (fy < 0.08) | (fx < 0.04)
    shade = 0.55 + 0.45 * hash3(row.to(torch.int64), col.to(torch.int64), torch.zeros_like(seed), seed)
    return torch.where(mortar, torch.zeros_like(shade), shade)


def shade_textures(
    points: torch.Tensor, surface: torch.Tensor, table: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Albedo of every pixel from its surface's texture, evaluated at its surface-frame point.

    Args:
        points: [N, 3] float32 hit points in each surface's own frame (metres).
        surface: [N] int64 surface index into the texture table.
        table: stacked texture parameters, from :func:`texture_table`.

    Returns:
        [N, 3] float32 linear RGB albedo in [0, 1].
    """
    kind = table["kind"][surface]
    scale = table["scale"][surface]
    seed = table["seed"][surface]
    colors = table["colors"][surface]  # [N, 3, 3]
    q = points / scale[:, None]
    pattern = torch.zeros_like(scale)
    for k in (CHECKER, STRIPES, BRICKS):
        sel = kind == k
        if not bool(sel.any()):
            continue
        if k == CHECKER:
            pattern[sel] = _checker(q[sel])
        elif k == STRIPES:
            pattern[sel] = _stripes(q[sel], table["direction"][surface[sel]])
        else:
            pattern[sel] = _bricks(q[sel], seed[sel])
    noise = fbm(q * 1.7, seed)
    is_noise = kind == NOISE
    pattern = torch.where(is_noise, torch.clamp(2.0 * noise - 0.5, 0.0, 1.0), pattern)
    base = colors[:, 0] + pattern[:, None] * (colors[:, 1] - colors[:, 0])
    blend = (table["noise_amount"][surface] * noise)[:, None]
    albedo = base + blend * (colors[:, 2] - base)
    grain = 0.9 + 0.2 * value_noise(q * 4.0, seed + 17)
    return torch.clamp(albedo * grain[:, None], 0.0, 1.0)


def texture_table(
    textures: list[TextureParams], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Stack a list of textures into tensors indexed by surface id."""
    return {
        "kind": torch.tensor([t.kind for t in textures], dtype=torch.int64, device=device),
        "colors": torch.tensor(np.stack([t.colors for t in textures]), dtype=torch.float32, device=device),
        "scale": torch.tensor([t.scale for t in textures], dtype=torch.float32, device=device),
        "direction": torch.tensor(
            np.stack([t.direction for t in textures]), dtype=torch.float32, device=device
        ),
        "noise_amount": torch.tensor([t.noise_amount for t in textures], dtype=torch.float32, device=device),
        "seed": torch.tensor([t.seed for t in textures], dtype=torch.int64, device=device),
    }
