"""The fast-weight memory base shared by TTT (:mod:`layers.ttt`) and elastic TTT (:mod:`layers.elastic`).

Both memories project the tokens of a clip ``x [B, T, P, C]`` to per-head queries, keys
(L2-normalised), values and a per-token learning rate (:class:`FastWeightIO`), keep a SwiGLU fast
weight ``f(x) = (silu(x w0) * (x w2)) w1`` per head that takes one update per frame, and read
``f(q)`` out through a per-head RMSNorm and an output projection. The initial fast weights are
learned (slow) parameters; a learned retention (:class:`LearnedRetention`) relaxes the fast weights
toward them after every update.

One switch, ``form``, picks how a clip is computed:
- ``form="parallel"``: frozen kernel; the memory is a block-causal linear attention over the whole
  clip (:func:`layers.ops.ttt.fast_weight_linear_attention` with the subclass's decay
  ``components``); the cache holds the fast weight's deviation from the slow weight
  (:attr:`FastWeightCache.state`, fixed size).
- ``form="sequential"``: the recurrence, one update per chunk of ``chunk_frames`` frames (every
  option of the subclass); the cache holds the recurrent state (:attr:`FastWeightCache.recurrent`).
Both forms keep their states in float32 (autocast is switched off around them).

Large chunks (``chunk_frames = n > 1``, sequential form only, LaCT / FSM style): the fast weights
take one update per n frames. Every frame of a chunk reads the weights left by the previous chunk
(apply-then-update; ``inclusive`` would let a frame see later frames of its chunk, so it needs
n = 1). The update of a chunk is a sum over its tokens of terms taken at those same weights, so a
stream accumulates it frame by frame in :attr:`FastWeightCache.pending` (three tensors the shapes of
the fast weights: the state stays the same size at every frame) and applies it (Muon, weight norm,
consolidation, retention) when the chunk's n-th frame arrives. A whole clip does the same per chunk
with one matmul, so both give the same output; a chunk may straddle clip (or TBPTT segment)
boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from layers.ops.ttt.parallel import fast_weight_linear_attention, initial_fast_state
from layers.ops.ttt.swiglu import FastWeights, fast_weight_read, inner_loss_updates, sequence_features

FORMS = ("parallel", "sequential")


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
            f"the {mode!r} form), got {type(cache).__name__}"
        )



@dataclass
class FastWeightCache:
    """Streaming state of a :class:`FastWeightMemory`, float32.

    Attributes:
        state: (parallel form) the deviation of w1 from the slow weight, [B, H, n Dh, V] in n parts
            (see :func:`layers.ops.ttt.fast_weight_linear_attention`; w1 = slow weight + their sum).
        recurrent: (sequential form) the recurrence's state: the fast weights (TTT, with momentum
            buffers) or the fast weights, anchors and importance EMAs (elastic), head-first.
        pending: (sequential form, ``chunk_frames > 1``) the summed updates (u0, u1, u2; None for a
            weight that is not updated) of the frames of the current chunk seen so far, zeros at a
            chunk start; None with one update per frame.
        pending_frames: how many frames of the current chunk ``pending`` holds (0 .. chunk_frames - 1).
    """

    state: torch.Tensor | None = None
    recurrent: Any = None
    pending: tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None] | None = None
    pending_frames: int = 0


class FastWeightMemory(nn.Module):
    """Base of the fast-weight memories: projections, retention, and the two forms of one clip.

    A subclass sets ``name``, registers its own parameters after ``super().__init__`` and defines
    the hooks :meth:`parallel_parts`, :meth:`components` (parallel form), :meth:`initial_recurrent`,
    :meth:`weights_of` and :meth:`apply` (sequential form; the base reads the fast weights and takes
    the inner-loss gradients, :mod:`layers.ops.ttt.swiglu`).

    Args:
        dim: token width C; num_heads: H (C divisible by H).
        form: ``"parallel"`` or ``"sequential"``.
        hidden_ratio: fast hidden width Dh = hidden_ratio * C / H.
        base_lr: initial per-token learning rate.
        inclusive: a frame reads the fast weights after its own update (else before).
        chunk_frames: frames per fast-weight update (>= 1; > 1 needs the sequential form and
            ``inclusive=False``).
    """

    name = "FastWeightMemory"
    update_hidden = False  # subclasses: whether w0 / w2 take updates too

    def __init__(self, dim: int, num_heads: int, form: str, hidden_ratio: float, base_lr: float,
                 inclusive: bool, chunk_frames: int = 1) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"{self.name}: form must be 'parallel' or 'sequential', got {form!r}")
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise ValueError(f"{self.name}: chunk_frames must be an int >= 1, got {chunk_frames!r}")
        if chunk_frames > 1 and (form != "sequential" or inclusive):
            raise ValueError(
                f"{self.name}: chunk_frames > 1 needs form='sequential' and inclusive=False (got form "
                f"{form!r}, inclusive={inclusive})"
            )
        self.io = FastWeightIO(dim, num_heads, hidden_ratio, base_lr, self.name)
        self.dim, self.form, self.inclusive, self.chunk_frames = dim, form, inclusive, chunk_frames
        self.retention: LearnedRetention | None = None

    def gamma(self) -> torch.Tensor | None:
        """Retention [H, Dh] float32 (None when off)."""
        return None if self.retention is None else self.retention()

    # -- hooks -------------------------------------------------------------------------------------
    def parallel_parts(self) -> int:
        """Parts n of the parallel form's state [B, H, n Dh, V]."""
        raise NotImplementedError(f"{type(self).__name__} defines parallel_parts for form='parallel'")

    def components(self, phq: torch.Tensor):
        """The parallel form's decay components (``fast_weight_linear_attention(components=...)``)."""
        raise NotImplementedError(f"{type(self).__name__} defines components for form='parallel'")

    def initial_recurrent(self, slow: FastWeights, device) -> Any:
        """The sequential form's state before the first frame, from the slow weights."""
        raise NotImplementedError(f"{type(self).__name__} defines initial_recurrent for form='sequential'")

    def sequence_context(self, batch_size: int) -> dict[str, Any]:
        """What every chunk update (:meth:`apply`) of one clip shares, computed once per clip: the retention
        ``gamma`` [H, Dh] (None when off) and the slow weights it relaxes toward (``origin``)."""
        gamma = self.gamma()
        return {"gamma": gamma, "origin": None if gamma is None else self.io.slow_weights(batch_size)}

    def weights_of(self, recurrent: Any) -> FastWeights:
        """The fast weights held in a sequential-form state."""
        raise NotImplementedError(f"{type(self).__name__} defines weights_of for form='sequential'")

    def apply(self, updates, recurrent: Any, context: dict[str, Any]) -> Any:
        """The sequential form's update of one chunk: ``updates`` (u0, u1, u2; the negative gradients of
        the chunk's inner loss at the weights of ``recurrent``) -> the state after the chunk."""
        raise NotImplementedError(f"{type(self).__name__} defines apply for form='sequential'")

    # -- the two forms -----------------------------------------------------------------------------
    def init_cache(self, batch_size: int, device: torch.device | str | None = None) -> FastWeightCache:
        """The state before the first frame (fast weights = slow weights)."""
        slow = self.io.slow_weights(batch_size)
        if self.form == "parallel":
            return FastWeightCache(state=initial_fast_state(slow.w1, self.parallel_parts()).to(device))
        recurrent = self.initial_recurrent(slow, device)
        pending = None
        if self.chunk_frames > 1:
            pending = self._zero_updates(self.weights_of(recurrent))
        return FastWeightCache(recurrent=recurrent, pending=pending)

    def _zero_updates(self, weights: FastWeights):
        hidden = self.update_hidden
        return (torch.zeros_like(weights.w0) if hidden else None, torch.zeros_like(weights.w1),
                torch.zeros_like(weights.w2) if hidden else None)

    def forward(
        self, x: torch.Tensor, cache: FastWeightCache | None = None
    ) -> tuple[torch.Tensor, FastWeightCache]:
        """x: [B, T, P, C] -> (y [B, T, P, C], cache after frame T-1); one update per frame."""
        check_input(self.name, x, self.dim)
        B, T, P, _ = x.shape
        if cache is None:
            cache = self.init_cache(B, x.device)
        field = "state" if self.form == "parallel" else "recurrent"
        check_cache(self.name, cache, field, FastWeightCache, self.form)
        q, k, v, eta = self.io.project(x)
        with torch.autocast(device_type=x.device.type, enabled=False):  # fast weights in float32
            if self.form == "parallel":
                o, cache = self._parallel(q, k, v, eta, P, cache)
            else:
                o, cache = self._sequential(q, k, v, eta, P, T, cache)
        return self.io.output(o, x.shape), cache

    def _parallel(self, q, k, v, eta, P, cache):
        slow = self.io.slow_weights(q.shape[0])
        phq, phk = sequence_features(q, slow.w0, slow.w2), sequence_features(k, slow.w0, slow.w2)
        o, state = fast_weight_linear_attention(
            phq,
            phk,
            eta.unsqueeze(-1) * v,
            slow.w1,
            P,
            inclusive=self.inclusive,
            components=self.components(phq),
            initial_state=cache.state,
            output_final_state=True,
        )
        return o, FastWeightCache(state=state)

    def _sequential(self, q, k, v, eta, P, T, cache):
        qh, kh, vh, etah = (t.transpose(1, 2) for t in (q, k, v, eta))
        context = self.sequence_context(q.shape[0])
        recurrent, pending, filled = cache.recurrent, cache.pending, cache.pending_frames
        n, outs, t = self.chunk_frames, [], 0
        if n > 1 and (pending is None or not 0 <= filled < n):
            raise TypeError(f"{self.name}: cache has no pending chunk (from init_cache of a layer with "
                            f"chunk_frames={n}), got pending_frames={filled}")
        while t < T:
            m = min(n - filled, T - t)  # frames of this segment: up to the end of the current chunk
            s = slice(t * P, (t + m) * P)
            q_s, k_s, v_s, eta_s = qh[:, :, s], kh[:, :, s], vh[:, :, s], etah[:, :, s]
            weights = self.weights_of(recurrent)
            if not self.inclusive:
                outs.append(fast_weight_read(q_s, weights))
            updates = inner_loss_updates(k_s, v_s, eta_s, weights, self.update_hidden)
            if n > 1:
                updates = tuple(None if u is None else p + u for p, u in zip(pending, updates, strict=True))
            filled, t = filled + m, t + m
            if filled == n:
                recurrent, filled = self.apply(updates, recurrent, context), 0
                pending = None if n == 1 else self._zero_updates(weights)
            else:
                pending = updates
            if self.inclusive:
                outs.append(fast_weight_read(q_s, self.weights_of(recurrent)))
        cache = FastWeightCache(recurrent=recurrent, pending=pending, pending_frames=filled)
        return torch.cat(outs, dim=2).transpose(1, 2), cache
