"""Elastic TTT memory (FSM / LaCET): fast-weight updates consolidated toward an EMA anchor.

Same projections and SwiGLU fast weight as :class:`layers.ttt.TTTMemory` (one update per frame),
followed after each frame by an elastic consolidation (:mod:`layers.ops.elastic`):

    W = W' - lam * F * (W' - A),      A = beta * A + (1 - beta) * W

Two modes:
- ``mode="reduced"`` (default, the long-range memory next to GLA): kernel frozen, importance
  ``F = sigmoid(F_logit)`` learned per head and hidden unit ([H, Dh], in (0, 1)), ``lam`` in (0, 1]
  and ``beta`` in [0, 1) configured or learned (sigmoid-parametrised). Exactly a linear attention
  with a persistent and a decaying (rho = beta (1 - lam F)) component, computed in parallel over the
  clip; the streaming state is fixed-size: the long and the decaying parts of the fast weight's
  deviation from the slow weight, [B, H, Dh, V] each (stacked as [B, H, 2 Dh, V]).
- ``mode="fsm"``: the faithful sequential FSM, with data-dependent importance (``estimator``:
  ``"abs"``, ``"sq"``, ``"si"`` EMA, or ``"static"`` = the learned F above) and an anchor policy
  (``"global"``, ``"streaming"``, ``"streaming-ema"``); optionally the hidden weights are updated
  and consolidated too. The cache holds the fast weights, anchors and importance EMAs.

In both modes a learned retention (:mod:`layers.ops.ttt.retention`, on by default) relaxes the fast
weight and the anchor toward the slow weights after every frame, ``X <- W_0 + gamma (X - W_0)``:
without it the elastic map keeps a persistent share of every update (its eigenvalue 1) and the
fast weight drifts without bound over a long stream; with it, the persistent component becomes a
long memory of horizon ~1 / (1 - gamma) frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from layers.ops.elastic.parallel import elastic_components
from layers.ops.elastic.sequential import (
    ANCHOR_POLICIES,
    IMPORTANCE_ESTIMATORS,
    ElasticState,
    elastic_chunk_step,
    init_elastic_state,
)
from layers.ops.ttt.parallel import fast_weight_linear_attention, initial_fast_state
from layers.ops.ttt.swiglu import FastWeights, sequence_features
from layers.ttt import (
    DEFAULT_RETENTION_FRAMES,
    FastWeightIO,
    LearnedRetention,
    check_cache,
    check_input,
)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass
class ElasticCache:
    """Streaming state of :class:`ElasticMemory`, float32.

    Attributes:
        state: (reduced) [B, H, 2 Dh, V]: the deviation of the fast weight from the slow weight
            w1_0, in two parts: the long part (first Dh rows: a * updates, decayed by gamma at every
            frame boundary) and the short part (last Dh rows: b * updates, decayed by gamma * rho);
            the fast weight is w1_0 plus their sum.
        fsm: (fsm mode) fast weights, anchors and importance EMAs, head-first.
    """

    state: torch.Tensor | None = None
    fsm: ElasticState | None = None


class ElasticMemory(nn.Module):
    """Elastic test-time-training memory, one update + consolidation per frame.

    Args:
        dim: token width C.
        num_heads: heads H (C divisible by H).
        mode: ``"reduced"`` (parallel linear-attention form) or ``"fsm"`` (sequential).
        hidden_ratio: fast hidden width Dh = hidden_ratio * C / H.
        base_lr: initial per-token learning rate.
        lam: consolidation strength in (0, 1] (initial value when ``learn_lam``, then in (0, 1)).
        beta: anchor EMA coefficient in [0, 1) (initial value when ``learn_beta``, then in (0, 1)).
        learn_lam, learn_beta: learn lam / beta (sigmoid-parametrised).
        importance_init: initial static importance F in (0, 1) (learned, per head and hidden unit;
            reduced mode and fsm with ``estimator="static"``).
        inclusive: a frame reads the fast weights after its own update (else before).
        estimator: fsm mode: importance estimator, one of ``IMPORTANCE_ESTIMATORS``.
        anchor: fsm mode: anchor policy, one of ``ANCHOR_POLICIES``.
        importance_decay: fsm mode: EMA decay of the data-dependent importance, in [0, 1).
        update_hidden: fsm mode: also update and consolidate w0 / w2.
        retention_frames: initial horizons (shortest, longest), in frames, of the learned retention
            (:class:`layers.ttt.LearnedRetention`); None = no retention (the original elastic map,
            whose state grows over long streams).

    Example:
        >>> layer = ElasticMemory(32, 2)
        >>> y, cache = layer(torch.randn(1, 3, 5, 32))     # 3 frames of 5 tokens
        >>> cache.state.shape                              # [B, H, 2 Dh, V]
        torch.Size([1, 2, 64, 16])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mode: str = "reduced",
        hidden_ratio: float = 2.0,
        base_lr: float = 1e-2,
        lam: float = 0.5,
        beta: float = 0.9,
        learn_lam: bool = False,
        learn_beta: bool = False,
        importance_init: float = 0.5,
        inclusive: bool = False,
        estimator: str = "sq",
        anchor: str = "streaming-ema",
        importance_decay: float = 0.9,
        update_hidden: bool = False,
        retention_frames: tuple[float, float] | None = DEFAULT_RETENTION_FRAMES,
    ) -> None:
        super().__init__()
        name = "ElasticMemory"
        if mode not in ("reduced", "fsm"):
            raise ValueError(f"{name}: mode must be 'reduced' or 'fsm', got {mode!r}")
        if not 0.0 < lam <= 1.0 or (learn_lam and lam == 1.0):
            raise ValueError(f"{name}: lam must be in (0, 1] ((0, 1) when learned), got {lam}")
        if not 0.0 <= beta < 1.0 or (learn_beta and beta == 0.0):
            raise ValueError(f"{name}: beta must be in [0, 1) ((0, 1) when learned), got {beta}")
        if not 0.0 < importance_init < 1.0:
            raise ValueError(f"{name}: importance_init must be in (0, 1), got {importance_init}")
        if estimator not in IMPORTANCE_ESTIMATORS:
            raise ValueError(f"{name}: estimator must be one of {IMPORTANCE_ESTIMATORS}, got {estimator!r}")
        if anchor not in ANCHOR_POLICIES:
            raise ValueError(f"{name}: anchor must be one of {ANCHOR_POLICIES}, got {anchor!r}")
        if not 0.0 <= importance_decay < 1.0:
            raise ValueError(f"{name}: importance_decay must be in [0, 1), got {importance_decay}")
        if mode == "reduced" and update_hidden:
            raise ValueError(f"{name}: mode='reduced' needs a frozen kernel (update_hidden=False)")
        self.io = FastWeightIO(dim, num_heads, hidden_ratio, base_lr, name)
        self.dim, self.mode, self.inclusive = dim, mode, inclusive
        self.estimator, self.anchor = estimator, anchor
        self.importance_decay, self.update_hidden = importance_decay, update_hidden
        if learn_beta and mode == "fsm" and anchor != "streaming-ema":
            raise ValueError(
                f"{name}: learn_beta needs anchor='streaming-ema' (anchor {anchor!r} ignores beta)"
            )
        # Static importance: used by the reduced mode and by fsm with estimator="static" only (a
        # parameter that gets no gradient would break DDP's unused-parameter check).
        self.importance_logit = None
        if mode == "reduced" or estimator == "static":
            self.importance_logit = nn.Parameter(
                torch.full((num_heads, self.io.hidden), _logit(importance_init))
            )
        self.lam_logit = nn.Parameter(torch.tensor(_logit(lam))) if learn_lam else None
        self.beta_logit = nn.Parameter(torch.tensor(_logit(beta))) if learn_beta else None
        self.lam_value, self.beta_value = lam, beta
        self.retention = None
        if retention_frames is not None:
            self.retention = LearnedRetention(num_heads, self.io.hidden, retention_frames, name)

    def gamma(self) -> torch.Tensor | None:
        """Retention [H, Dh] float32 (None when off)."""
        return None if self.retention is None else self.retention()

    def importance(self) -> torch.Tensor | None:
        """Static importance F [H, Dh] in (0, 1) (None for a data-dependent fsm estimator)."""
        return None if self.importance_logit is None else torch.sigmoid(self.importance_logit.float())

    def lam(self) -> torch.Tensor:
        """Consolidation strength (0-d float32 tensor)."""
        if self.lam_logit is not None:
            return torch.sigmoid(self.lam_logit.float())
        return torch.tensor(self.lam_value, device=self.io.w1.device)

    def beta(self) -> torch.Tensor:
        """Anchor EMA coefficient (0-d float32 tensor)."""
        if self.beta_logit is not None:
            return torch.sigmoid(self.beta_logit.float())
        return torch.tensor(self.beta_value, device=self.io.w1.device)

    def init_cache(self, batch_size: int, device: torch.device | str | None = None) -> ElasticCache:
        """The state before the first frame (fast weights and anchors = slow weights)."""
        slow = self.io.slow_weights(batch_size)
        if self.mode == "reduced":
            return ElasticCache(state=initial_fast_state(slow.w1, 2).to(device))
        weights = FastWeights(*(w.to(device).clone() for w in (slow.w0, slow.w1, slow.w2)))
        return ElasticCache(fsm=init_elastic_state(weights, self.update_hidden, self.estimator))

    def forward(
        self, x: torch.Tensor, cache: ElasticCache | None = None
    ) -> tuple[torch.Tensor, ElasticCache]:
        """x: [B, T, P, C] -> (y [B, T, P, C], cache after frame T-1); one update per frame."""
        check_input("ElasticMemory", x, self.dim)
        B, T, P, _ = x.shape
        if cache is None:
            cache = self.init_cache(B, x.device)
        check_cache(
            "ElasticMemory", cache, "state" if self.mode == "reduced" else "fsm", ElasticCache, self.mode
        )
        q, k, v, eta = self.io.project(x)
        with torch.autocast(device_type=x.device.type, enabled=False):  # fast weights in float32
            if self.mode == "reduced":
                o, cache = self._reduced(q, k, v, eta, P, cache)
            else:
                o, cache = self._fsm(q, k, v, eta, P, T, cache)
        return self.io.output(o, x.shape), cache

    def _reduced(self, q, k, v, eta, P, cache):
        slow = self.io.slow_weights(q.shape[0])
        phq, phk = sequence_features(q, slow.w0, slow.w2), sequence_features(k, slow.w0, slow.w2)
        components = elastic_components(self.lam(), self.importance(), self.beta(), self.gamma())
        o, state = fast_weight_linear_attention(
            phq,
            phk,
            eta.unsqueeze(-1) * v,
            slow.w1,
            P,
            inclusive=self.inclusive,
            components=components,
            initial_state=cache.state,
            output_final_state=True,
        )
        return o, ElasticCache(state=state)

    def _fsm(self, q, k, v, eta, P, T, cache):
        qh, kh, vh, etah = (t.transpose(1, 2) for t in (q, k, v, eta))
        lam, beta, F, gamma = self.lam(), self.beta(), self.importance(), self.gamma()
        origin = None if gamma is None else self.io.slow_weights(q.shape[0])
        state, outs = cache.fsm, []
        for t in range(T):
            s = slice(t * P, (t + 1) * P)
            o_t, state = elastic_chunk_step(
                qh[:, :, s],
                kh[:, :, s],
                vh[:, :, s],
                etah[:, :, s],
                state,
                lam=lam,
                beta=beta,
                estimator=self.estimator,
                F=F,
                anchor_policy=self.anchor,
                importance_decay=self.importance_decay,
                inclusive=self.inclusive,
                update_hidden=self.update_hidden,
                retention=gamma,
                origin=origin,
            )
            outs.append(o_t)
        return torch.cat(outs, dim=2).transpose(1, 2), ElasticCache(fsm=state)
