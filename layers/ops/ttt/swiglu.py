"""SwiGLU fast weight of the TTT / elastic memories: read-out, inner-loss update, optimizer pieces.

The fast weight of one head is a bias-free SwiGLU MLP

    phi(x) = silu(x w0) * (x w2)        w0, w2: [K, Dh]         (the "kernel", or feature map)
    f(x)   = phi(x) w1                  w1: [Dh, V]

trained at test time on the LaCT dot-product inner loss of a chunk of tokens

    L = - sum_i eta_i <f(k_i), v_i>     eta_i >= 0: per-token learning rate

with one gradient step per chunk. Every update here is the *negative* gradient ``-dL/dW`` (so the
step is ``W += U``); the backward pass through SwiGLU is written by hand (tests compare it with
autograd). Layout inside this module is head-first: tokens ``[B, H, N, K]``, ``eta [B, H, N]``,
weights ``[B, H, K, Dh]`` / ``[B, H, Dh, V]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

# Newton-Schulz quintic coefficients used by Muon (and LaCT) to orthogonalise an update.
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


@dataclass
class FastWeights:
    """Fast weights of a SwiGLU memory, per sequence and head, with optional momentum buffers.

    Attributes:
        w0: gate projection [B, H, K, Dh].
        w1: output projection [B, H, Dh, V].
        w2: up projection [B, H, K, Dh].
        m0, m1, m2: momentum buffers of the same shapes (None when momentum is off).
    """

    w0: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor
    m0: torch.Tensor | None = None
    m1: torch.Tensor | None = None
    m2: torch.Tensor | None = None


def swiglu_features(x: torch.Tensor, w0: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The frozen-kernel feature map ``phi(x) = silu(x w0) * (x w2)``.

    Args:
        x: tokens [..., N, K].
        w0, w2: [..., K, Dh] (broadcast against x's leading dims).

    Returns:
        phi(x): [..., N, Dh].
    """
    return F.silu(x @ w0) * (x @ w2)


def sequence_features(x: torch.Tensor, w0: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``phi`` on sequence-first tokens: x [B, T, H, K], w0 / w2 [B, H, K, Dh] -> [B, T, H, Dh]."""
    return F.silu(torch.einsum("bthk,bhkd->bthd", x, w0)) * torch.einsum("bthk,bhkd->bthd", x, w2)


def fast_weight_read(x: torch.Tensor, weights: FastWeights) -> torch.Tensor:
    """Apply the fast weight: ``f(x) = phi(x) w1``, x [B, H, N, K] -> [B, H, N, V]."""
    return swiglu_features(x, weights.w0, weights.w2) @ weights.w1


def inner_loss(k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor, weights: FastWeights) -> torch.Tensor:
    """The LaCT dot-product inner loss ``L = -sum_i eta_i <f(k_i), v_i>`` summed over batch and heads.

    Used by tests to check :func:`inner_loss_updates` against autograd.
    """
    return -(eta.unsqueeze(-1) * fast_weight_read(k, weights) * v).sum()


def inner_loss_updates(
    k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor, weights: FastWeights, update_hidden: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Negative gradients of the inner loss over one chunk (hand-written SwiGLU backward).

    Args:
        k: keys [B, H, N, K]; v: values [B, H, N, V]; eta: learning rates [B, H, N].
        weights: the fast weights at which the gradient is taken (before the step).
        update_hidden: also return the updates of w0 and w2 (otherwise None for both).

    Returns:
        (u0 [B, H, K, Dh] or None, u1 [B, H, Dh, V], u2 [B, H, K, Dh] or None) with
        ``u = -dL/dw``; e.g. ``u1 = phi(K)^T (eta * V)``.
    """
    gate = k @ weights.w0
    up = k @ weights.w2
    sig = torch.sigmoid(gate)
    act = gate * sig  # silu(gate)
    ev = eta.unsqueeze(-1) * v  # [B, H, N, V]
    u1 = (act * up).transpose(-1, -2) @ ev
    if not update_hidden:
        return None, u1, None
    # -dL/dphi = (eta v) w1^T ; phi = silu(gate) * up ; silu'(z) = sig(z) (1 + z (1 - sig(z))).
    dphi = ev @ weights.w1.transpose(-1, -2)  # [B, H, N, Dh]
    dgate = dphi * up * sig * (1.0 + gate * (1.0 - sig))
    dup = dphi * act
    kt = k.transpose(-1, -2)
    return kt @ dgate, u1, kt @ dup


def newton_schulz(update: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Muon's orthogonalisation: ``steps`` quintic Newton-Schulz iterations on each matrix.

    The matrix is first scaled to unit Frobenius norm; the iteration then pushes its singular
    values towards 1 (approximately ``U V^T`` of its SVD), as in Muon and LaCT.

    Args:
        update: [..., M, N]; steps: number of iterations (>= 1).

    Returns:
        the orthogonalised update, same shape and dtype.
    """
    a, b, c = _NS_COEFFS
    transpose = update.shape[-2] > update.shape[-1]
    x = update.transpose(-1, -2) if transpose else update
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.transpose(-1, -2)
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.transpose(-1, -2) if transpose else x


def column_norms(w: torch.Tensor) -> torch.Tensor:
    """Norm of every column (over the input dim, -2): [..., M, N] -> [..., 1, N]."""
    return w.norm(dim=-2, keepdim=True)


def renormalize_columns(w: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """LaCT weight norm: rescale each column of ``w`` to the norm ``target`` [..., 1, N]."""
    return w * (target / column_norms(w).clamp_min(eps))


def apply_updates(
    weights: FastWeights,
    updates: tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None],
    *,
    momentum: float = 0.0,
    muon_steps: int = 0,
    norm_targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> FastWeights:
    """One optimizer step ``W += step(U)`` for each updated weight.

    Order (as in LaCT): momentum ``m = momentum * m + U`` (buffers start at zero), then Muon on
    the step (``muon_steps > 0``), then ``W += step``, then weight norm (each column rescaled to
    its target norm) when ``norm_targets`` is given. A weight whose update is None is left as is.
    """
    new = {}
    for i, update in enumerate(updates):
        if update is None:
            continue
        name = f"w{i}"
        step = update
        if momentum > 0.0:
            buf = getattr(weights, f"m{i}")
            step = update if buf is None else momentum * buf + update
            new[f"m{i}"] = step
        if muon_steps > 0:
            step = newton_schulz(step, muon_steps)
        w = getattr(weights, name) + step
        if norm_targets is not None:
            w = renormalize_columns(w, norm_targets[i])
        new[name] = w
    return replace(weights, **new)
