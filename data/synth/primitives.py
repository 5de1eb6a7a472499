"""Analytic ray-primitive intersection in each primitive's canonical frame, vectorised over rays.

Every object is a canonical primitive under an affine map ``p_world = R @ (size * q) + center``:
  - ``box``:      the cube |q_x|, |q_y|, |q_z| <= 1
  - ``ellipsoid``: the unit sphere |q| <= 1 (a sphere when the three sizes are equal)
  - ``cylinder``: q_x^2 + q_z^2 <= 1, |q_y| <= 1 (axis along the local y)
  - ``cone``:     q_x^2 + q_z^2 <= ((1 - q_y) / 2)^2, |q_y| <= 1 (apex at q_y = +1, base at -1)
A ray ``o + t d`` maps to the canonical ray ``o' + t d'`` with the SAME parameter t (the map is
affine), so the nearest hit over all objects is a plain minimum of t. Directions are not
normalised: for primary rays ``d`` has camera-frame z = 1, so t is the z-depth in metres.
"""

from __future__ import annotations

import torch

KINDS = ("box", "ellipsoid", "cylinder", "cone")
_EPS_DIR = 1e-12


def dot3(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product of [N, 3] tensors -> [N] (a BLAS mat-vec: ~4x faster than .sum(-1))."""
    return (x * y) @ torch.ones(3, dtype=x.dtype, device=x.device)


def _safe(d: torch.Tensor) -> torch.Tensor:
    """Direction components with zeros replaced by a tiny same-sign value (slab divisions)."""
    return torch.where(d.abs() < _EPS_DIR, torch.full_like(d, _EPS_DIR), d)


def _first_valid(cands: list[tuple[torch.Tensor, torch.Tensor]], t_min: float) -> torch.Tensor:
    """Smallest candidate t > t_min among those whose validity mask is set (inf when none)."""
    inf = torch.full_like(cands[0][0], float("inf"))
    best = inf
    for t, ok in cands:
        best = torch.minimum(best, torch.where(ok & (t > t_min), t, inf))
    return best


def _quadratic_roots(a, b, c):
    """Both real roots of a t^2 + b t + c (either order) and where they exist.

    Uses the cancellation-free form q = -(b + sign(b) sqrt(disc)) / 2, roots q / a and c / q, so
    grazing rays and nearly degenerate cones keep float32 accuracy.
    """
    disc = b * b - 4.0 * a * c
    ok = disc >= 0.0
    sq = torch.sqrt(torch.clamp(disc, min=0.0))
    q = -0.5 * (b + torch.where(b >= 0, sq, -sq))
    tiny = torch.full_like(a, 1e-30)
    a_safe = torch.where(a.abs() < 1e-30, tiny, a)
    q_safe = torch.where(q.abs() < 1e-30, tiny, q)
    return q / a_safe, c / q_safe, ok


def _refine_cone(o: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One Newton step on the cone's implicit function evaluated AT the hit point.

    The quadratic's coefficients cancel badly for rays passing near the apex from afar (float32
    hit points ~1e-4 off the surface); F and dF/dt evaluated locally do not.
    """
    p = o + t[:, None] * d
    k = 0.5 * (1.0 - p[:, 1])
    F = p[:, 0] ** 2 + p[:, 2] ** 2 - k * k
    dF = 2.0 * (p[:, 0] * d[:, 0] + p[:, 2] * d[:, 2]) + k * d[:, 1]
    safe = torch.where(dF.abs() > 1e-12, dF, torch.ones_like(dF))
    step = torch.where(dF.abs() > 1e-12, F / safe, torch.zeros_like(F))
    return torch.where(torch.isfinite(step), t - step, t)


def intersect_canonical(kind: str, o: torch.Tensor, d: torch.Tensor, t_min: float = 1e-4) -> torch.Tensor:
    """Nearest hit parameter of canonical rays with a canonical primitive.

    Args:
        kind: one of ``KINDS``.
        o: [N, 3] canonical ray origins.
        d: [N, 3] canonical ray directions (any length).
        t_min: hits at t <= t_min are ignored (self-intersection of shadow rays).

    Returns:
        [N] t of the nearest hit (inf when the ray misses).
    """
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    if kind == "box":
        inv = 1.0 / _safe(d)
        t1, t2 = (-1.0 - o) * inv, (1.0 - o) * inv
        t_near = torch.minimum(t1, t2).amax(dim=-1)
        t_far = torch.maximum(t1, t2).amin(dim=-1)
        ok = t_near <= t_far
        return _first_valid([(t_near, ok), (t_far, ok)], t_min)
    if kind == "ellipsoid":
        r0, r1, ok = _quadratic_roots(dot3(d, d), 2.0 * dot3(o, d), dot3(o, o) - 1.0)
        return _first_valid([(r0, ok), (r1, ok)], t_min)
    if kind == "cylinder":
        r0, r1, ok = _quadratic_roots(dx * dx + dz * dz, 2.0 * (ox * dx + oz * dz), ox * ox + oz * oz - 1.0)
        cands = [(r, ok & ((oy + r * dy).abs() <= 1.0)) for r in (r0, r1)]
        for y in (-1.0, 1.0):
            t = (y - oy) / _safe(dy)
            cands.append((t, (ox + t * dx) ** 2 + (oz + t * dz) ** 2 <= 1.0))
        return _first_valid(cands, t_min)
    if kind == "cone":
        alpha, beta = 0.5 * (1.0 - oy), 0.5 * dy  # radius at t: alpha - beta t
        a = dx * dx + dz * dz - beta * beta
        b = 2.0 * (ox * dx + oz * dz + alpha * beta)
        c = ox * ox + oz * oz - alpha * alpha
        r0, r1, ok = _quadratic_roots(a, b, c)
        r0, r1 = _refine_cone(o, d, r0), _refine_cone(o, d, r1)
        cands = [(r, ok & ((oy + r * dy).abs() <= 1.0)) for r in (r0, r1)]
        t = (-1.0 - oy) / _safe(dy)
        cands.append((t, (ox + t * dx) ** 2 + (oz + t * dz) ** 2 <= 1.0))
        return _first_valid(cands, t_min)
    raise ValueError(f"primitive kind: expected one of {KINDS}, got {kind!r}")


def canonical_normal(kind: str, q: torch.Tensor) -> torch.Tensor:
    """Outward normal (not normalised) at canonical surface points ``q`` [N, 3]."""
    if kind == "box":
        axis = q.abs().argmax(dim=-1, keepdim=True)
        n = torch.zeros_like(q)
        return n.scatter(-1, axis, torch.sign(q.gather(-1, axis)))
    if kind == "ellipsoid":
        return q
    if kind == "cylinder":
        radial = torch.stack([q[:, 0], torch.zeros_like(q[:, 0]), q[:, 2]], dim=-1)
        cap = torch.stack([torch.zeros_like(q[:, 0]), torch.sign(q[:, 1]), torch.zeros_like(q[:, 0])], -1)
        on_cap = (1.0 - q[:, 1].abs()) < (1.0 - radial.norm(dim=-1)).abs()
        return torch.where(on_cap[:, None], cap, radial)
    if kind == "cone":
        side = torch.stack([2.0 * q[:, 0], 0.5 * (1.0 - q[:, 1]), 2.0 * q[:, 2]], dim=-1)
        base = torch.zeros_like(q)
        base[:, 1] = -1.0
        radius = torch.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2)
        on_base = (q[:, 1] + 1.0).abs() < (radius - 0.5 * (1.0 - q[:, 1])).abs()
        return torch.where(on_base[:, None], base, side)
    raise ValueError(f"primitive kind: expected one of {KINDS}, got {kind!r}")


def room_exit(o: torch.Tensor, d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Where rays starting inside an axis-aligned room [lo, hi] leave it.

    Args:
        o: [N, 3] origins inside the room (world, metres).
        d: [N, 3] directions.
        lo, hi: [3] room corners (world).

    Returns:
        (t [N], face [N] int64): face 2*axis + (0 at lo, 1 at hi); axis 0 = x, 1 = y, 2 = z.
    """
    ds = _safe(d)
    t_axis = torch.where(ds > 0, (hi - o) / ds, (lo - o) / ds)
    t, axis = t_axis.min(dim=-1)
    side = (ds.gather(-1, axis[:, None])[:, 0] > 0).to(torch.int64)
    return t, 2 * axis + side
