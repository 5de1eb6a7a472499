"""TTT memory (LaCT-style SwiGLU fast weights), one fast-weight update per frame.

Tokens of a clip ``x [B, T, P, C]`` are projected to per-head queries, keys (L2-normalised),
values and a per-token learning rate ``eta = softplus(W_eta x + b)`` (float32); the fast weight
``f(x) = (silu(x w0) * (x w2)) w1`` of every head takes one step of the LaCT dot-product inner
loss per frame (:mod:`layers.ops.ttt`), and the read-out ``f(q)`` goes through a per-head RMSNorm
and an output projection. The initial fast weights are learned (slow) parameters.

Two forms:
- ``form="sequential"`` (default): the original recurrence, with every LaCT option (update of the
  hidden weights, Muon, weight norm, momentum); the cache holds the fast weights.
- ``form="parallel"``: frozen kernel (no update_hidden / Muon / weight norm), computed as
  block-causal linear attention over the whole clip; the cache holds the deviation of w1 from the
  slow weight (fixed size [B, H, Dh, V], or its two parts [B, H, 2 Dh, V] with momentum).

Retention (:mod:`layers.ops.ttt.retention`): after every update the fast weights relax toward the
slow weights, ``W <- W_0 + gamma (W - W_0)`` with a learned gamma per head and hidden unit, so the
state stays bounded over any stream. On by default in the parallel form (which has nothing else
bounding it); off by default in the sequential form, whose weight norm bounds it (faithful LaCT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from layers.ops.ttt.parallel import fast_weight_linear_attention, initial_fast_state, ttt_components
from layers.ops.ttt.sequential import check_optimizer_args, ttt_chunk_step
from layers.ops.ttt.swiglu import FastWeights, column_norms, sequence_features


class FastWeightIO(nn.Module):
    """Projections around a per-head fast-weight memory (shared by TTT and elastic memories).

    Args:
        dim: token width C; num_heads: H (C divisible by H; head dim K = V = C / H).
        hidden_ratio: fast-weight hidden width Dh = hidden_ratio * K.
        base_lr: initial per-token learning rate (softplus bias so that eta = base_lr at start).

    Slow weights ``w0, w2 [H, K, Dh]`` (std 1, keys are unit vectors) and ``w1 [H, Dh, V]``
    (std Dh^-1/2) are the initial fast weights of every sequence.
    """

    def __init__(self, dim: int, num_heads: int, hidden_ratio: float, base_lr: float, name: str) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1 or dim % num_heads:
            raise ValueError(f"{name}: dim {dim} must be a positive multiple of num_heads {num_heads}")
        if hidden_ratio <= 0:
            raise ValueError(f"{name}: hidden_ratio must be > 0, got {hidden_ratio}")
        if base_lr <= 0:
            raise ValueError(f"{name}: base_lr must be > 0, got {base_lr}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.hidden = max(1, round(hidden_ratio * self.head_dim))
        H, K, Dh = num_heads, self.head_dim, self.hidden
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.lr = nn.Linear(dim, num_heads)
        nn.init.zeros_(self.lr.weight)
        nn.init.constant_(self.lr.bias, math.log(math.expm1(base_lr)))  # softplus^-1(base_lr)
        self.w0 = nn.Parameter(torch.randn(H, K, Dh))
        self.w2 = nn.Parameter(torch.randn(H, K, Dh))
        self.w1 = nn.Parameter(torch.randn(H, Dh, K) / math.sqrt(Dh))
        self.out_norm = nn.RMSNorm(K)
        self.out = nn.Linear(dim, dim, bias=False)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, P, C] -> q, k, v [B, T*P, H, K] and eta [B, T*P, H], all float32."""
        B, T, P, C = x.shape
        q, k, v = self.qkv(x).float().view(B, T * P, 3, self.num_heads, self.head_dim).unbind(2)
        eta = F.softplus(self.lr(x).float()).view(B, T * P, self.num_heads)
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, eta

    def output(self, o: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Read-out o [B, T*P, H, V] float32 -> y [B, T, P, C] (RMSNorm per head, output projection)."""
        y = self.out_norm(o).reshape(shape)
        return self.out(y.to(self.out.weight.dtype))

    def slow_weights(self, batch_size: int) -> FastWeights:
        """The initial fast weights expanded to a batch, float32: w0, w2 [B, H, K, Dh], w1 [B, H, Dh, V]."""
        expand = lambda w: w.float().unsqueeze(0).expand(batch_size, *w.shape)
        return FastWeights(expand(self.w0), expand(self.w1), expand(self.w2))


DEFAULT_RETENTION_FRAMES = (8.0, 512.0)
"""Initial horizons (shortest, longest) of the learned retention, in frames: the longest is 2-5x the
memory of the tiny preset's GLA layer (~130-660 frames), the shortest a few local windows."""


class LearnedRetention(nn.Module):
    """Learned retention gamma [H, Dh] in (0, 1) of a fast-weight memory (:mod:`layers.ops.ttt.retention`).

    ``gamma = floor + (1 - floor) sigmoid(logit)`` per head and hidden unit (``floor`` = the TTT
    momentum: the parallel form's kernel needs gamma > momentum; 0 without momentum). At
    initialisation the horizons ``1 / (1 - gamma)`` (in updates, i.e. frames) are log-spaced over
    ``frames = (shortest, longest)`` across the hidden units, the same in every head: a spread of
    time scales, as GLA's gates have.

    Args:
        num_heads, hidden: H and Dh.
        frames: (shortest, longest) initial horizon in frames, 1 < shortest <= longest.
        name: the owning layer (for error messages).
        floor: lower bound of gamma, in [0, 1); the shortest horizon must start above it.
    """

    def __init__(self, num_heads: int, hidden: int, frames, name: str, floor: float = 0.0) -> None:
        super().__init__()
        try:
            lo, hi = (float(f) for f in frames)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}: retention_frames must be [shortest, longest] or null, got {frames!r}"
            ) from None
        if not 1.0 < lo <= hi:
            raise ValueError(f"{name}: retention_frames must satisfy 1 < shortest <= longest, got {frames!r}")
        if not 1.0 - 1.0 / lo > floor:
            raise ValueError(
                f"{name}: momentum {floor} must be below the shortest retention 1 - 1/{lo:g} "
                f"(raise retention_frames[0] or lower momentum)"
            )
        horizons = torch.logspace(math.log10(lo), math.log10(hi), hidden, dtype=torch.float64)
        p = (1.0 - 1.0 / horizons - floor) / (1.0 - floor)
        self.floor = floor
        self.logit = nn.Parameter(torch.log(p / (1.0 - p)).float().expand(num_heads, hidden).clone())

    def forward(self) -> torch.Tensor:
        """gamma [H, Dh] float32."""
        return self.floor + (1.0 - self.floor) * torch.sigmoid(self.logit.float())


def check_input(name: str, x: torch.Tensor, width: int) -> None:
    """x must be [B, T, P, C] with C = width (ValueError naming the layer otherwise)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != width:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected x of shape [B, T, P, {width}], got {shape}")


def check_cache(name: str, cache, field: str, expected: type, mode: str) -> None:
    """The cache must be ``expected`` with ``field`` set (one made by this layer's init_cache / forward)."""
    if not isinstance(cache, expected) or getattr(cache, field) is None:
        raise TypeError(
            f"{name}: cache must be a {expected.__name__} with {field!r} set (from init_cache of a layer in "
            f"{mode!r} form/mode), got {type(cache).__name__}"
        )


@dataclass
class TTTCache:
    """Streaming state of :class:`TTTMemory`, float32.

    Attributes:
        weights: (sequential form) the fast weights and momentum buffers, per sequence and head.
        state: (parallel form) the deviation of w1 from the slow weight [B, H, Dh, V], or with
            momentum its two parts [B, H, 2 Dh, V] (w1 = slow weight + their sum); see
            :func:`layers.ops.ttt.fast_weight_linear_attention`.
    """

    weights: FastWeights | None = None
    state: torch.Tensor | None = None


class TTTMemory(nn.Module):
    """LaCT-style test-time-training memory with one SwiGLU fast-weight step per frame.

    Args:
        dim: token width C.
        num_heads: heads H (C divisible by H).
        form: ``"sequential"`` (all options) or ``"parallel"`` (frozen kernel, linear attention).
        hidden_ratio: fast hidden width Dh = hidden_ratio * C / H.
        base_lr: initial per-token learning rate.
        inclusive: a frame reads the fast weights after its own update (else before: LaCT).
        update_hidden: also update w0 / w2 (sequential only).
        weight_norm: keep every fast-weight column at the norm of the slow weight (sequential only).
        muon_steps: Newton-Schulz iterations on each step, 0 = off (sequential only).
        momentum: heavy-ball coefficient in [0, 1) on the steps.
        retention_frames: initial horizons (shortest, longest), in frames, of the learned retention
            (:class:`LearnedRetention`); None = no retention; ``"auto"`` = (8, 512) in the parallel
            form, None in the sequential form.

    Example:
        >>> layer = TTTMemory(32, 2)
        >>> y, cache = layer(torch.randn(1, 3, 5, 32))     # 3 frames of 5 tokens
        >>> y.shape
        torch.Size([1, 3, 5, 32])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        form: str = "sequential",
        hidden_ratio: float = 2.0,
        base_lr: float = 1e-2,
        inclusive: bool = False,
        update_hidden: bool = True,
        weight_norm: bool = True,
        muon_steps: int = 5,
        momentum: float = 0.0,
        retention_frames: tuple[float, float] | None | str = "auto",
    ) -> None:
        super().__init__()
        name = "TTTMemory"
        if form not in ("sequential", "parallel"):
            raise ValueError(f"{name}: form must be 'sequential' or 'parallel', got {form!r}")
        check_optimizer_args(name, muon_steps, momentum)
        if form == "parallel" and (update_hidden or weight_norm or muon_steps):
            raise ValueError(
                f"{name}: form='parallel' needs a frozen kernel and a plain step: set update_hidden=False, "
                f"weight_norm=False, muon_steps=0 (got {update_hidden}, {weight_norm}, {muon_steps})"
            )
        self.io = FastWeightIO(dim, num_heads, hidden_ratio, base_lr, name)
        self.dim, self.form, self.inclusive = dim, form, inclusive
        self.update_hidden, self.weight_norm = update_hidden, weight_norm
        self.muon_steps, self.momentum = muon_steps, momentum
        if retention_frames == "auto":
            retention_frames = DEFAULT_RETENTION_FRAMES if form == "parallel" else None
        self.retention = None
        if retention_frames is not None:
            # gamma > momentum: needed by the parallel form, kept in both so weights move between forms
            self.retention = LearnedRetention(num_heads, self.io.hidden, retention_frames, name, momentum)

    def gamma(self) -> torch.Tensor | None:
        """Retention [H, Dh] float32 (None when off)."""
        return None if self.retention is None else self.retention()

    def init_cache(self, batch_size: int, device: torch.device | str | None = None) -> TTTCache:
        """The state before the first frame (fast weights = slow weights)."""
        slow = self.io.slow_weights(batch_size)
        if self.form == "parallel":
            return TTTCache(state=initial_fast_state(slow.w1, 2 if self.momentum > 0 else 1).to(device))
        return TTTCache(weights=FastWeights(*(w.to(device).clone() for w in (slow.w0, slow.w1, slow.w2))))

    def forward(self, x: torch.Tensor, cache: TTTCache | None = None) -> tuple[torch.Tensor, TTTCache]:
        """x: [B, T, P, C] -> (y [B, T, P, C], cache after frame T-1); one update per frame."""
        check_input("TTTMemory", x, self.dim)
        B, T, P, _ = x.shape
        if cache is None:
            cache = self.init_cache(B, x.device)
        check_cache(
            "TTTMemory", cache, "state" if self.form == "parallel" else "weights", TTTCache, self.form
        )
        q, k, v, eta = self.io.project(x)
        with torch.autocast(device_type=x.device.type, enabled=False):  # fast weights in float32
            if self.form == "parallel":
                o, cache = self._parallel(q, k, v, eta, P, cache)
            else:
                o, cache = self._sequential(q, k, v, eta, P, T, cache)
        return self.io.output(o, x.shape), cache

    def _parallel(self, q, k, v, eta, P, cache):
        io, B = self.io, q.shape[0]
        slow = io.slow_weights(B)
        phq, phk = sequence_features(q, slow.w0, slow.w2), sequence_features(k, slow.w0, slow.w2)
        components = ttt_components(self.gamma(), self.momentum, io.num_heads, io.hidden, phq)
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
        return o, TTTCache(state=state)

    def _sequential(self, q, k, v, eta, P, T, cache):
        targets = None
        if self.weight_norm:
            targets = tuple(
                column_norms(w.float()).unsqueeze(0) for w in (self.io.w0, self.io.w1, self.io.w2)
            )
        qh, kh, vh, etah = (t.transpose(1, 2) for t in (q, k, v, eta))
        gamma = self.gamma()
        origin = None if gamma is None else self.io.slow_weights(q.shape[0])
        weights, outs = cache.weights, []
        for t in range(T):
            s = slice(t * P, (t + 1) * P)
            o_t, weights = ttt_chunk_step(
                qh[:, :, s],
                kh[:, :, s],
                vh[:, :, s],
                etah[:, :, s],
                weights,
                inclusive=self.inclusive,
                update_hidden=self.update_hidden,
                muon_steps=self.muon_steps,
                momentum=self.momentum,
                norm_targets=targets,
                retention=gamma,
                origin=origin,
            )
            outs.append(o_t)
        return torch.cat(outs, dim=2).transpose(1, 2), TTTCache(weights=weights)
