"""Elastic TTT (FSM / LaCET), sequential form: fast-weight step, then consolidation toward an anchor.

After each chunk's TTT step ``W' = W + U`` every updated fast weight is pulled toward an anchor
``A`` with importance ``F`` (a one-step solution of an EWC penalty), then the anchor moves:

    W = W' - lam * F * (W' - A)                  lam * F in [0, 1] element-wise
    A = policy(A, W)                             global: A stays the slow weights
                                                 streaming: A = W
                                                 streaming-ema: A = beta * A + (1 - beta) * W

Importance ``F`` is either static (``"static"``: a given per-hidden-unit F [H, Dh], the case with an
exact parallel form, :func:`layers.ops.elastic.elastic_parallel`), or data-dependent, the faithful
FSM variant: an EMA (decay ``importance_decay``) of a per-parameter signal

    "abs": |U|      "sq": U^2      "si": |U * (W' - A)|  (synaptic-intelligence style)

normalised by its maximum over each head's matrix, so it lies in [0, 1] (our choice; FSM's public code
does not normalise, ``normalize_importance=False``). The anchor starts at the initial (slow) weights
and the importance EMA at zero. :func:`elastic_apply` also takes Muon on the step and LaCT's weight
norm, which with ``normalize_importance=False`` is the published FSM recurrence
(:class:`layers.elastic.ElasticMemory` with ``mode="faithful"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layers.ops.ttt.checks import check_fast_weight_args, chunk_bounds, compute_dtype, head_first
from layers.ops.ttt.retention import check_retention, per_hidden_unit, retain_tensor, retention_table
from layers.ops.ttt.swiglu import (
    FastWeights,
    fast_weight_read,
    inner_loss_updates,
    newton_schulz,
    renormalize_columns,
)

IMPORTANCE_ESTIMATORS = ("static", "abs", "sq", "si")
ANCHOR_POLICIES = ("global", "streaming", "streaming-ema")


@dataclass
class ElasticState:
    """Streaming state of the sequential elastic memory (head-first, compute dtype).

    Attributes:
        weights: the fast weights W (w0, w2 [B, H, K, Dh]; w1 [B, H, Dh, V]).
        anchors: (A0, A1, A2), the anchor of each weight, None for a weight that is not updated.
        importance: (F0, F1, F2), the EMA of the importance signal (data-dependent estimators
            only; None otherwise).
    """

    weights: FastWeights
    anchors: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]
    importance: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None] = (None, None, None)


def init_elastic_state(weights: FastWeights, update_hidden: bool, estimator: str,
                       importance_init: float = 0.0, detach_anchor: bool = False) -> ElasticState:
    """The state before the first chunk: anchors at the initial weights (detached from the graph
    with ``detach_anchor``, as FSM's code copies them), importance EMA at ``importance_init``
    (0 here; FSM's code starts it at 1e-6)."""
    ws = (weights.w0, weights.w1, weights.w2)
    updated = (update_hidden, True, update_hidden)
    anchors = tuple((w.detach() if detach_anchor else w) if on else None
                    for w, on in zip(ws, updated, strict=True))
    importance = (None, None, None)
    if estimator != "static":
        importance = tuple(torch.full_like(w, importance_init) if on else None
                           for w, on in zip(ws, updated, strict=True))
    return ElasticState(weights, anchors, importance)


def check_elastic_args(op: str, lam, F: torch.Tensor | None, beta, num_heads: int, hidden: int) -> None:
    """``F [H, Dh]`` in (0, 1], ``lam * F`` in (0, 1] and ``beta`` in [0, 1), else ValueError."""
    lam_t = torch.as_tensor(lam).detach()
    beta_t = torch.as_tensor(beta).detach()
    if lam_t.numel() != 1 or beta_t.numel() != 1:
        raise ValueError(
            f"{op}: lam and beta must be scalars, got shapes {tuple(lam_t.shape)}, {tuple(beta_t.shape)}"
        )
    if not 0.0 <= float(beta_t) < 1.0:
        raise ValueError(f"{op}: beta must be in [0, 1), got {float(beta_t)}")
    if F is None:
        if not 0.0 < float(lam_t) <= 1.0:
            raise ValueError(f"{op}: lam must be in (0, 1], got {float(lam_t)}")
        return
    if not isinstance(F, torch.Tensor) or tuple(F.shape) != (num_heads, hidden):
        shape = tuple(F.shape) if isinstance(F, torch.Tensor) else type(F).__name__
        raise ValueError(f"{op}: F must be a tensor [H, Dh] = {(num_heads, hidden)}, got {shape}")
    lam_f = lam_t.to(F) * F.detach()
    if not bool(((lam_f > 0) & (lam_f <= 1)).all()):
        raise ValueError(
            f"{op}: lam * F must lie in (0, 1], got range "
            f"[{lam_f.min().item():.3g}, {lam_f.max().item():.3g}]"
        )


def _importance_signal(estimator: str, update: torch.Tensor, w_new: torch.Tensor, anchor: torch.Tensor):
    if estimator == "abs":
        return update.abs()
    if estimator == "sq":
        return update.square()
    return (update * (w_new - anchor)).abs()  # "si"


def _move_anchor(policy: str, anchor: torch.Tensor, w: torch.Tensor, beta) -> torch.Tensor:
    if policy == "global":
        return anchor
    if policy == "streaming":
        return w
    return beta * anchor + (1.0 - beta) * w  # "streaming-ema"


def elastic_chunk_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    state: ElasticState,
    *,
    lam,
    beta,
    estimator: str = "static",
    F: torch.Tensor | None = None,
    anchor_policy: str = "streaming-ema",
    importance_decay: float = 0.9,
    inclusive: bool = False,
    update_hidden: bool = False,
    retention: torch.Tensor | None = None,
    origin: FastWeights | None = None,
    **faithful,
) -> tuple[torch.Tensor, ElasticState]:
    """Read, step and consolidate the fast weights for one chunk (head-first layout).

    Args:
        q, k: [B, H, N, K]; v: [B, H, N, V]; eta: [B, H, N].
        state: from :func:`init_elastic_state` or a previous step.
        lam: consolidation strength (scalar, float or 0-d tensor).
        beta: anchor EMA coefficient (``streaming-ema`` only).
        estimator: one of ``IMPORTANCE_ESTIMATORS``; ``"static"`` uses ``F``.
        F: static importance per hidden unit [H, Dh] (broadcast over the other dim of each weight).
        anchor_policy: one of ``ANCHOR_POLICIES``.
        importance_decay: EMA decay of the data-dependent importance, in [0, 1).
        inclusive: read after this chunk's update and consolidation (else before).
        update_hidden: also step and consolidate w0 and w2.
        retention: gamma [H, Dh] or None: after the anchor moves, every updated weight and its
            anchor move to ``X_0 + gamma (X - X_0)`` (:mod:`layers.ops.ttt.retention`).
        origin: the initial fast weights X_0 (needed with ``retention``).
        **faithful: ``normalize_importance``, ``detach_importance``, ``muon_steps``,
            ``norm_targets`` of :func:`elastic_apply` (the published FSM recurrence).

    Returns:
        (o [B, H, N, V], state after the chunk).
    """
    if not inclusive:
        o = fast_weight_read(q, state.weights)
    updates = inner_loss_updates(k, v, eta, state.weights, update_hidden)
    state = elastic_apply(state, updates, lam=lam, beta=beta, estimator=estimator, F=F,
                          anchor_policy=anchor_policy, importance_decay=importance_decay,
                          retention=retention, origin=origin, **faithful)
    if inclusive:
        o = fast_weight_read(q, state.weights)
    return o, state


def elastic_apply(
    state: ElasticState,
    updates: tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None],
    *,
    lam,
    beta,
    estimator: str = "static",
    F: torch.Tensor | None = None,
    anchor_policy: str = "streaming-ema",
    importance_decay: float = 0.9,
    retention: torch.Tensor | None = None,
    origin: FastWeights | None = None,
    normalize_importance: bool = True,
    detach_importance: bool = False,
    muon_steps: int = 0,
    norm_targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> ElasticState:
    """Step and consolidate the fast weights with a chunk's updates (``u = -dL/dW`` at the weights
    of ``state``; None for a weight that is not updated). Per updated weight, in this order:

        step  = NS_muon(u) if muon_steps else u          (Muon: Newton-Schulz, unit Frobenius norm first)
        W'    = W + step
        Fimp  = importance_decay * Fimp + (1 - importance_decay) * signal(step, W', A)   (data-dependent)
        W     = W' - lam * F * (W' - A)     F = Fimp / max over the head's matrix  if normalize_importance
                                                = Fimp                             otherwise (FSM's code)
        W     = renorm(W)                   each column to its target norm (norm_targets; LaCT weight norm)
        A     = policy(A, W)
        W, A  = X_0 + gamma (W - X_0), X_0 + gamma (A - X_0)      (retention, when given)

    ``detach_importance``: the signal is computed without gradient (FSM's code treats importance as a
    constant). Returns the state after the chunk.
    """
    if retention is not None and origin is None:
        raise ValueError("elastic_chunk_step: retention needs the initial fast weights (origin)")
    w = state.weights
    new_w, new_a, new_f = {}, list(state.anchors), list(state.importance)
    for i, update in enumerate(updates):
        if update is None:
            continue
        step = newton_schulz(update, muon_steps) if muon_steps > 0 else update
        w_new, anchor = getattr(w, f"w{i}") + step, state.anchors[i]
        if estimator == "static":
            imp = per_hidden_unit(F, i)
        else:
            if detach_importance:
                signal = _importance_signal(estimator, step.detach(), w_new.detach(), anchor.detach())
            else:
                signal = _importance_signal(estimator, step, w_new, anchor)
            new_f[i] = importance_decay * state.importance[i] + (1.0 - importance_decay) * signal
            imp = new_f[i]
            if normalize_importance:
                peak = imp.amax(dim=(-2, -1), keepdim=True)
                imp = imp / peak.clamp_min(torch.finfo(peak.dtype).tiny)  # 0 where the EMA is all 0
        consolidated = w_new - lam * imp * (w_new - anchor)
        if norm_targets is not None:
            consolidated = renormalize_columns(consolidated, norm_targets[i])
        new_anchor = _move_anchor(anchor_policy, anchor, consolidated, beta)
        if retention is not None:
            gamma, x0 = per_hidden_unit(retention, i), getattr(origin, f"w{i}")
            consolidated = retain_tensor(consolidated, x0, gamma)
            new_anchor = retain_tensor(new_anchor, x0, gamma)
        new_w[f"w{i}"] = consolidated
        new_a[i] = new_anchor
    weights = FastWeights(new_w.get("w0", w.w0), new_w["w1"], new_w.get("w2", w.w2))
    return ElasticState(weights, tuple(new_a), tuple(new_f))


def elastic_sequential(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    w0: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    chunk_size: int,
    lam,
    F: torch.Tensor,
    beta,
    inclusive: bool = False,
    retention=None,
) -> torch.Tensor:
    """Elastic TTT with static importance, frozen kernel and an EMA anchor: the reference loop.

    Per chunk c: ``W' = W + U_c`` (``U_c = phi(K_c)^T (eta_c V_c)``), ``W = W' - lam F (W' - A)``
    with F per row of w1, ``A = beta A + (1 - beta) W``; A starts at w1. With retention gamma, then
    ``W = w1_0 + gamma (W - w1_0)`` and ``A = w1_0 + gamma (A - w1_0)``.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; eta: [B, T, H].
        w0, w2: frozen kernel [B, H, K, Dh]; w1: initial fast weight (and anchor) [B, H, Dh, V].
        chunk_size: tokens per update (>= 1).
        lam: scalar consolidation strength; F: importance [H, Dh]; lam * F must lie in (0, 1].
        beta: anchor EMA coefficient in [0, 1).
        inclusive: chunk c reads the weights after its own update and consolidation.
        retention: None (1) or gamma in (0, 1], a scalar or [H, Dh].

    Returns:
        o [B, T, H, V] in q's dtype.
    """
    op = "elastic_sequential"
    dims = check_fast_weight_args(op, q, k, v, eta, w0, w1, w2, chunk_size)
    check_elastic_args(op, lam, F, beta, dims["H"], dims["Dh"])
    check_retention(op, retention, dims["H"], dims["Dh"])
    dtype = compute_dtype(q, k, v, eta, w0, w1, w2)
    qh, kh, vh, etah = (head_first(t, dtype) for t in (q, k, v, eta))
    origin = FastWeights(w0.to(dtype), w1.to(dtype), w2.to(dtype))
    state = init_elastic_state(origin, False, "static")
    gamma = retention_table(retention, dims["H"], dims["Dh"], origin.w1)
    lam_t = torch.as_tensor(lam, dtype=dtype, device=q.device)
    beta_t = torch.as_tensor(beta, dtype=dtype, device=q.device)
    outs = []
    for s, e in chunk_bounds(dims["T"], chunk_size):
        o_c, state = elastic_chunk_step(
            qh[:, :, s:e],
            kh[:, :, s:e],
            vh[:, :, s:e],
            etah[:, :, s:e],
            state,
            lam=lam_t,
            beta=beta_t,
            estimator="static",
            F=F.to(dtype),
            inclusive=inclusive,
            retention=gamma,
            origin=origin,
        )
        outs.append(o_c)
    return torch.cat(outs, dim=2).transpose(1, 2).to(q.dtype)
