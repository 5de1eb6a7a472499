"""Elastic TTT memory (FSM / LaCET): fast-weight updates consolidated toward an EMA anchor.

Same projections and SwiGLU fast weight as :class:`layers.ttt.TTTMemory`, followed after each
update by an elastic consolidation (:mod:`layers.ops.elastic`):

    W = W' - lam * F * (W' - A),      A = beta * A + (1 - beta) * W

Two modes. ``mode="reduced"`` (default) is **our own construct**, not the paper's layer: a
simplification chosen because it has an exact parallel form. ``mode="faithful"`` is Fast Spatial
Memory's recurrence as its public code runs it.

``mode="reduced"``, with the ``form`` switch of :class:`layers.fast_weight.FastWeightMemory`:
- ``form="parallel"`` (default, the long-range memory next to GLA): kernel frozen, importance
  ``F = sigmoid(F_logit)`` learned per head and hidden unit ([H, Dh], in (0, 1), static: it does
  not depend on the data), ``lam`` in (0, 1] and ``beta`` in [0, 1) configured or learned
  (sigmoid-parametrised). Exactly a linear attention with a persistent and a decaying
  (rho = beta (1 - lam F)) component, computed in parallel over the clip; the streaming state is
  fixed-size: the long and the decaying parts of the fast weight's deviation from the slow weight,
  [B, H, Dh, V] each (stacked as [B, H, 2 Dh, V]).
- ``form="sequential"``: the same recurrence run frame by frame, with a choice of importance
  (``estimator``: ``"abs"``, ``"sq"``, ``"si"`` EMA normalised by its per-head maximum, or
  ``"static"`` = the learned F above, which equals the parallel form) and an anchor policy
  (``"global"``, ``"streaming"``, ``"streaming-ema"``); optionally the hidden weights are updated
  and consolidated too. No Muon, no weight norm.
In both forms a learned retention (:mod:`layers.ops.ttt.retention`, on by default) relaxes the fast
weight and the anchor toward the slow weights after every update, ``X <- W_0 + gamma (X - W_0)``:
without it the elastic map keeps a persistent share of every update (its eigenvalue 1) and the
fast weight drifts without bound over a long stream.

``mode="faithful"``: the paper (arXiv 2604.07350) -> its code (Mars-tin/fast-spatial-mem,
``fsm/model/model_lacet.py``, ``fast_weight_swish_glu_weight_norm_mini_batch_apply``, buffers from
``utils_train.init_ewc_buffers``, values of ``fsm/configs/train/*.yaml``) -> here:

- LaCT fast weight, all three of w0, w1, w2 updated. Code: ``w += NS5(lr-weighted gradient)`` per
  chunk. Here: w0, w1, w2 updated, Muon with 5 Newton-Schulz steps.
- Large chunks. Code: ``chunk_size: 2048`` tokens (8 views). Here: ``chunk_frames`` frames.
- Importance, an EMA of the SI signal. Code (``fisher_mode=2``): ``s = |dW * (W' - W*)|`` with dW
  the Muon'd step and W' the weight after it, detached; ``F <- a F + (1 - a) s``, F starting at
  1e-6, **not normalised** (no per-head maximum); ``ewc_alpha: 0.5``. Here: ``estimator="si"``,
  the same signal and EMA (``importance_decay`` = a), F from 1e-6, no normalisation.
- Consolidation after each step. Code: ``W <- W' - lam F (W' - W*)`` with the updated F;
  ``ewc_lambda_prox: 0.5``. Here: the same (``lam``).
- Weight norm. Code: every column back to its norm at the start of the call (detached), after the
  consolidation. Here: to the slow weights' column norms (detached), after the consolidation.
- Anchor EMA. Code: ``W* <- b W* + (1 - b) W`` after the weight norm, W* starting as a detached
  copy of the slow weights; ``ewc_anchor_beta: 0.5``. Here: the same (``beta``).
- Read-out. Code: after the update (or before, ``apply_before_update``). Here: before (strict,
  causal) by default; ``inclusive`` (after) only with ``chunk_frames=1``.

Differences, on purpose: the code's Newton-Schulz runs in bfloat16 (here float32, so streaming
equals the clip to 1e-5); the code has three learning rates per token (one per weight), here one
per token and head (with Muon a per-token rate only weighs tokens inside a chunk); the code's SiLU
on q/k/v is not used (our projections are linear); the code hands all fast blocks the first
block's anchor and importance buffers (one shared ``info`` dict) and expands them with
``repeat_interleave`` while the weights use ``repeat``, which here is per layer and per sequence.
Faithful mode has no retention unless ``retention_frames`` is set (``"auto"`` = none): weight norm
bounds the fast weights and the anchor is an average of them.

The sequential cache holds the fast weights, anchors and importance EMAs (constant size; with
``chunk_frames > 1`` also the summed updates of the current chunk).
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
    elastic_apply,
    init_elastic_state,
)
from layers.ops.ttt.swiglu import FastWeights, column_norms
from layers.registry import elastic_option_conflicts

MODES = ("reduced", "faithful")
FAITHFUL_MUON_STEPS = 5  # fsm/configs/train/*.yaml: muon_update_steps: 5
FAITHFUL_IMPORTANCE_INIT = 1e-6  # utils_train.init_ewc_buffers: F starts at 1e-6


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class ElasticMemory(FastWeightMemory):
    """Elastic test-time-training memory, one update + consolidation per chunk of frames.

    Args:
        dim: token width C.
        num_heads: heads H (C divisible by H).
        form: reduced mode: ``"parallel"`` (frozen kernel, linear attention; default) or
            ``"sequential"`` (the recurrence, with the estimator / anchor choices below).
        hidden_ratio: fast hidden width Dh = hidden_ratio * C / H.
        base_lr: initial per-token learning rate.
        lam: consolidation strength in (0, 1] (initial value when ``learn_lam``, then in (0, 1)).
        beta: anchor EMA coefficient in [0, 1) (initial value when ``learn_beta``, then in (0, 1)).
        learn_lam, learn_beta: learn lam / beta (sigmoid-parametrised).
        importance_init: initial static importance F in (0, 1) (learned, per head and hidden unit;
            parallel form, and sequential with ``estimator="static"``).
        inclusive: a frame reads the fast weights after its own update (else before).
        estimator: sequential form and faithful mode: importance estimator, one of
            ``IMPORTANCE_ESTIMATORS`` (faithful: not ``"static"``; FSM's configs use ``"si"``).
        anchor: sequential form and faithful mode: anchor policy, one of ``ANCHOR_POLICIES``.
        importance_decay: sequential form and faithful mode: EMA decay of the data-dependent
            importance, in [0, 1) (FSM's ``ewc_alpha``).
        update_hidden: reduced sequential form: also update and consolidate w0 / w2 (faithful
            mode always does).
        retention_frames: initial horizons (shortest, longest), in frames, of the learned retention
            (:class:`layers.fast_weight.LearnedRetention`); None = no retention (the original elastic
            map, whose state grows over long streams); ``"auto"`` = (8, 512) in reduced mode, None
            in faithful mode.
        mode: ``"reduced"`` (ours, above) or ``"faithful"`` (FSM's recurrence: sequential, all
            three weights updated with Muon and weight norm, data-dependent unnormalised importance;
            see the module docstring). Faithful mode takes lam, beta, estimator, anchor,
            importance_decay, inclusive, retention_frames, chunk_frames, hidden_ratio, base_lr;
            the reduced-only options (form, learn_lam, learn_beta, importance_init, update_hidden)
            must stay at their defaults.
        chunk_frames: frames per update (>= 1; > 1 needs the sequential recurrence, i.e.
            ``form="sequential"`` or faithful mode, and ``inclusive=False``).

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
        retention_frames: tuple[float, float] | None | str = "auto",
        mode: str = "reduced",
        chunk_frames: int = 1,
    ) -> None:
        name = self.name
        if mode not in MODES:
            raise ValueError(f"{name}: mode must be one of {MODES}, got {mode!r}")
        faithful = mode == "faithful"
        if faithful:
            conflicts = elastic_option_conflicts(dict(
                form=form, learn_lam=learn_lam, learn_beta=learn_beta, importance_init=importance_init,
                update_hidden=update_hidden, estimator=estimator, mode=mode))
            if conflicts:
                raise ValueError(f"{name}: {conflicts[0]}")
            form, update_hidden = "sequential", True
        super().__init__(dim, num_heads, form, hidden_ratio, base_lr, inclusive, chunk_frames)
        self.mode = mode
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
        if retention_frames == "auto":
            retention_frames = None if faithful else DEFAULT_RETENTION_FRAMES
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
        if self.mode == "faithful":
            return init_elastic_state(weights, True, self.estimator, FAITHFUL_IMPORTANCE_INIT,
                                      detach_anchor=True)
        return init_elastic_state(weights, self.update_hidden, self.estimator)

    def sequence_context(self, batch_size: int) -> dict:
        context = {**super().sequence_context(batch_size), "lam": self.lam(), "beta": self.beta(),
                   "F": self.importance()}
        if self.mode == "faithful":
            context["faithful"] = dict(
                normalize_importance=False, detach_importance=True, muon_steps=FAITHFUL_MUON_STEPS,
                norm_targets=tuple(column_norms(w.detach().float()).unsqueeze(0)
                                   for w in (self.io.w0, self.io.w1, self.io.w2)))
        return context

    def weights_of(self, recurrent: ElasticState) -> FastWeights:
        return recurrent.weights

    def apply(self, updates, recurrent, context):
        return elastic_apply(
            recurrent,
            updates,
            lam=context["lam"],
            beta=context["beta"],
            estimator=self.estimator,
            F=context["F"],
            anchor_policy=self.anchor,
            importance_decay=self.importance_decay,
            retention=context["gamma"],
            origin=context["origin"],
            **context.get("faithful", {}),
        )
