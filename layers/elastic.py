"""Elastic TTT memory (FSM / LaCET): fast-weight updates consolidated toward an EMA anchor.

Same projections and SwiGLU fast weight as :class:`layers.ttt.TTTMemory` (one update per frame),
followed after each frame by an elastic consolidation (:mod:`layers.ops.elastic`):

    W = W' - lam * F * (W' - A),      A = beta * A + (1 - beta) * W

Two forms (the ``form`` switch of :class:`layers.fast_weight.FastWeightMemory`, as in TTT):
- ``form="parallel"`` (default, the "reduced" elastic layer, the long-range memory next to GLA):
  kernel frozen, importance ``F = sigmoid(F_logit)`` learned per head and hidden unit ([H, Dh],
  in (0, 1)), ``lam`` in (0, 1] and ``beta`` in [0, 1) configured or learned
  (sigmoid-parametrised). Exactly a linear attention with a persistent and a decaying
  (rho = beta (1 - lam F)) component, computed in parallel over the clip; the streaming state is
  fixed-size: the long and the decaying parts of the fast weight's deviation from the slow weight,
  [B, H, Dh, V] each (stacked as [B, H, 2 Dh, V]).
- ``form="sequential"``: the faithful sequential FSM, with data-dependent importance (``estimator``:
  ``"abs"``, ``"sq"``, ``"si"`` EMA, or ``"static"`` = the learned F above) and an anchor policy
  (``"global"``, ``"streaming"``, ``"streaming-ema"``); optionally the hidden weights are updated
  and consolidated too. The cache holds the fast weights, anchors and importance EMAs.

In both forms a learned retention (:mod:`layers.ops.ttt.retention`, on by default) relaxes the fast
weight and the anchor toward the slow weights after every frame, ``X <- W_0 + gamma (X - W_0)``:
without it the elastic map keeps a persistent share of every update (its eigenvalue 1) and the
fast weight drifts without bound over a long stream; with it, the persistent component becomes a
long memory of horizon ~1 / (1 - gamma) frames.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from layers.fast_weight import DEFAULT_RETENTION_FRAMES, FastWeightMemory, LearnedRetention
from layers.ops.elastic.parallel import elastic_components
from layers.ops.elastic.sequential import (
    ANCHOR_POLICIES,
    IMPORTANCE_ESTIMATORS,
    ElasticState,
    elastic_chunk_step,
    init_elastic_state,
)
from layers.ops.ttt.swiglu import FastWeights


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class ElasticMemory(FastWeightMemory):
    """Elastic test-time-training memory, one update + consolidation per frame.

    Args:
        dim: token width C.
        num_heads: heads H (C divisible by H).
        form: ``"parallel"`` (reduced: frozen kernel, linear attention; default) or ``"sequential"``
            (the faithful FSM).
        hidden_ratio: fast hidden width Dh = hidden_ratio * C / H.
        base_lr: initial per-token learning rate.
        lam: consolidation strength in (0, 1] (initial value when ``learn_lam``, then in (0, 1)).
        beta: anchor EMA coefficient in [0, 1) (initial value when ``learn_beta``, then in (0, 1)).
        learn_lam, learn_beta: learn lam / beta (sigmoid-parametrised).
        importance_init: initial static importance F in (0, 1) (learned, per head and hidden unit;
            parallel form, and sequential with ``estimator="static"``).
        inclusive: a frame reads the fast weights after its own update (else before).
        estimator: sequential form: importance estimator, one of ``IMPORTANCE_ESTIMATORS``.
        anchor: sequential form: anchor policy, one of ``ANCHOR_POLICIES``.
        importance_decay: sequential form: EMA decay of the data-dependent importance, in [0, 1).
        update_hidden: sequential form: also update and consolidate w0 / w2.
        retention_frames: initial horizons (shortest, longest), in frames, of the learned retention
            (:class:`layers.fast_weight.LearnedRetention`); None = no retention (the original elastic
            map, whose state grows over long streams).

    The parallel form's cache state is [B, H, 2 Dh, V]: the deviation of the fast weight from the
    slow weight w1_0 in two parts, the long part (first Dh rows: a * updates, decayed by gamma at
    every frame boundary) and the short part (last Dh rows: b * updates, decayed by gamma * rho);
    the fast weight is w1_0 plus their sum. The sequential form's recurrent state is an
    ``ElasticState`` (fast weights, anchors and importance EMAs, head-first).

    Example:
        >>> layer = ElasticMemory(32, 2)
        >>> y, cache = layer(torch.randn(1, 3, 5, 32))     # 3 frames of 5 tokens
        >>> cache.state.shape                              # [B, H, 2 Dh, V]
        torch.Size([1, 2, 64, 16])
    """

    name = "ElasticMemory"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        form: str = "parallel",
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
        super().__init__(dim, num_heads, form, hidden_ratio, base_lr, inclusive)
        name = self.name
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
        if form == "parallel" and update_hidden:
            raise ValueError(f"{name}: form='parallel' needs a frozen kernel (update_hidden=False)")
        self.estimator, self.anchor = estimator, anchor
        self.importance_decay, self.update_hidden = importance_decay, update_hidden
        if learn_beta and form == "sequential" and anchor != "streaming-ema":
            raise ValueError(
                f"{name}: learn_beta needs anchor='streaming-ema' (anchor {anchor!r} ignores beta)"
            )
        # Static importance: used by the parallel form and by the sequential one with
        # estimator="static" only (a parameter that gets no gradient would break DDP's
        # unused-parameter check).
        self.importance_logit = None
        if form == "parallel" or estimator == "static":
            self.importance_logit = nn.Parameter(
                torch.full((num_heads, self.io.hidden), _logit(importance_init))
            )
        self.lam_logit = nn.Parameter(torch.tensor(_logit(lam))) if learn_lam else None
        self.beta_logit = nn.Parameter(torch.tensor(_logit(beta))) if learn_beta else None
        self.lam_value, self.beta_value = lam, beta
        if retention_frames is not None:
            self.retention = LearnedRetention(num_heads, self.io.hidden, retention_frames, name)

    def importance(self) -> torch.Tensor | None:
        """Static importance F [H, Dh] in (0, 1) (None for a data-dependent sequential estimator)."""
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

    def parallel_parts(self) -> int:
        return 2

    def components(self, phq: torch.Tensor):
        return elastic_components(self.lam(), self.importance(), self.beta(), self.gamma())

    def initial_recurrent(self, slow: FastWeights, device) -> ElasticState:
        weights = FastWeights(*(w.to(device).clone() for w in (slow.w0, slow.w1, slow.w2)))
        return init_elastic_state(weights, self.update_hidden, self.estimator)

    def sequence_context(self, batch_size: int) -> dict:
        return {**super().sequence_context(batch_size), "lam": self.lam(), "beta": self.beta(),
                "F": self.importance()}

    def step(self, q, k, v, eta, recurrent, context):
        return elastic_chunk_step(
            q,
            k,
            v,
            eta,
            recurrent,
            lam=context["lam"],
            beta=context["beta"],
            estimator=self.estimator,
            F=context["F"],
            anchor_policy=self.anchor,
            importance_decay=self.importance_decay,
            inclusive=self.inclusive,
            update_hidden=self.update_hidden,
            retention=context["gamma"],
            origin=context["origin"],
        )
