"""GLA memory: channel-wise gated linear attention over the token stream (HorizonStream's long-range memory).

The P tokens of each frame are flattened into one token sequence ``[B, T * P, C]`` that is causal
token by token across frames (a token sees every earlier token and itself):

    q, k, v  = short causal depthwise conv (then SiLU) of linear projections of x, per head
    q, k     = L2-normalised per head
    g        = clamp(logsigmoid(W_g2 W_g1 x + b_g) / gate_normalizer, min=gate_min)   per key channel
               (``decay="head"``: one scalar per head and token, HorizonStream's ablation "without
               channel-wise gating")
    S_t      = diag(exp g_t) S_{t-1} + k_t v_t^T,   o_t = K^-1/2 q_t^T S_t          (layers.ops.gla)
               or, with ``delta_rule=True`` (the default), the gated delta rule (layers.ops.gated_delta):
    S_t      = (I - beta_t k_t k_t^T) diag(exp g_t) S_{t-1} + beta_t k_t v_t^T,  beta = sigmoid(W_b x)
    y        = W_o (RMSNorm_head(o) * sigmoid(W_z x))

The state ``S [B, H, K, V]`` and the last ``conv_size - 1`` pre-convolution inputs form the cache
(:class:`GLACache`, float32 whatever the autocast dtype), so a clip processed frame by frame through
the cache gives the same output as the clip processed whole (the chunked form over all T * P
tokens), and a clip can be split anywhere (truncated backpropagation). Follows :mod:`layers.memory`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from layers.ops.gated_delta import chunk_gated_delta
from layers.ops.gla import chunk_gla

DECAYS = ("channel", "head")


@dataclass
class GLACache:
    """Streaming state of :class:`GLAMemory` after the tokens seen so far.

    Attributes:
        state: [B, H, K, V] float32 linear-attention state ``S``.
        conv_state: [B, D, conv_size - 1] float32, the last pre-convolution q/k/v inputs (oldest
            first; D = 2 H K + H V), zeros before the first token.
    """

    state: torch.Tensor
    conv_state: torch.Tensor


class GLAMemory(nn.Module):
    """Channel-wise gated linear attention memory layer with an explicit streaming cache.

    Args:
        dim: token width C.
        num_heads: heads H.
        head_dim: key width K per head (default ``dim // num_heads``).
        expand_v: value width per head V = round(expand_v * K).
        conv_size: kernel of the causal depthwise convolution on q, k, v (1 = no convolution).
        gate_normalizer: divides ``logsigmoid`` of the gate (larger = slower forgetting).
        gate_low_rank: rank of the gate projection ``W_g2 W_g1``.
        gate_min: lower clamp of the per-token log-decay (<= 0).
        gate_bias_range: the gate bias starts uniform in this range, spreading the initial
            retention time scales (bias 0: ~23 tokens; bias 6: ~6,500 tokens at normalizer 16).
        chunk_size: chunk length of the parallel form (a power of two).
        backend: ``None`` (Triton on CUDA, torch elsewhere), ``"torch"`` or ``"triton"``, for both
            memories (the delta rule's Triton kernels take chunk_size <= 64).
        delta_rule: write with the gated delta rule (per-head write strength ``beta``), as
            HorizonStream's released model does (the default); ``False`` = the plain additive GLA
            write.
        decay: ``"channel"`` (a log-decay per key channel, the default) or ``"head"`` (one scalar
            log-decay per head and token, shared by its K channels), for either write.

    Example:
        >>> layer = GLAMemory(64, 2)
        >>> x = torch.randn(1, 3, 10, 64)                 # 3 frames of 10 tokens
        >>> y, cache = layer(x)
        >>> y.shape, cache.state.shape, cache.state.dtype
        (torch.Size([1, 3, 10, 64]), torch.Size([1, 2, 32, 32]), torch.float32)
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        expand_v: float = 1.0,
        conv_size: int = 4,
        gate_normalizer: float = 16.0,
        gate_low_rank: int = 16,
        gate_min: float = -5.0,
        gate_bias_range: tuple[float, float] = (0.0, 6.0),
        chunk_size: int = 64,
        backend: str | None = None,
        delta_rule: bool = True,
        decay: str = "channel",
    ) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1:
            raise ValueError(f"GLAMemory: dim and num_heads must be >= 1, got {dim}, {num_heads}")
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"GLAMemory: dim {dim} is not divisible by num_heads {num_heads}")
            head_dim = dim // num_heads
        if head_dim < 1 or expand_v <= 0:
            raise ValueError(f"GLAMemory: head_dim must be >= 1 and expand_v > 0, got {head_dim}, {expand_v}")
        if conv_size < 1:
            raise ValueError(f"GLAMemory: conv_size must be >= 1, got {conv_size}")
        if gate_normalizer <= 0 or gate_min > 0 or gate_low_rank < 1:
            raise ValueError(
                "GLAMemory: need gate_normalizer > 0, gate_min <= 0, gate_low_rank >= 1, got"
                f" {gate_normalizer}, {gate_min}, {gate_low_rank}"
            )
        if chunk_size < 1 or chunk_size & (chunk_size - 1):
            raise ValueError(f"GLAMemory: chunk_size must be a power of two, got {chunk_size}")
        if backend not in (None, "torch", "triton"):
            raise ValueError(f"GLAMemory: backend must be None, 'torch' or 'triton', got {backend!r}")
        if decay not in DECAYS:
            raise ValueError(f"GLAMemory: decay must be one of {DECAYS}, got {decay!r}")
        self.decay = decay
        self.num_heads, self.key_dim = num_heads, head_dim
        self.value_dim = max(1, round(expand_v * head_dim))
        self.conv_size, self.gate_normalizer, self.gate_min = conv_size, gate_normalizer, gate_min
        self.chunk_size, self.backend, self.delta_rule = chunk_size, backend, delta_rule
        H, K, V = num_heads, self.key_dim, self.value_dim
        self.qkv_dim = 2 * H * K + H * V
        self.qkv = nn.Linear(dim, self.qkv_dim, bias=False)
        self.conv = nn.Conv1d(self.qkv_dim, self.qkv_dim, conv_size, groups=self.qkv_dim, bias=False)
        self.gate_down = nn.Linear(dim, gate_low_rank, bias=False)
        self.gate_up = nn.Linear(gate_low_rank, H * K if decay == "channel" else H)
        with torch.no_grad():
            self.gate_up.bias.uniform_(*gate_bias_range)
        self.beta_proj = nn.Linear(dim, H) if delta_rule else None
        self.out_gate = nn.Linear(dim, H * V)
        self.out_norm = nn.RMSNorm(V, eps=1e-6)
        self.out_proj = nn.Linear(H * V, dim, bias=False)

    def init_cache(self, batch_size: int, device: torch.device | str | None = None) -> GLACache:
        """Zero state and zero convolution history for ``batch_size`` sequences."""
        H, K, V = self.num_heads, self.key_dim, self.value_dim
        return GLACache(
            state=torch.zeros(batch_size, H, K, V, dtype=torch.float32, device=device),
            conv_state=torch.zeros(batch_size, self.qkv_dim, self.conv_size - 1, dtype=torch.float32,
                                   device=device),
        )

    def _check(self, x: torch.Tensor, cache: GLACache | None) -> None:
        if x.dim() != 4 or x.shape[-1] != self.qkv.in_features:
            raise ValueError(
                f"GLAMemory: expected x of shape [B, T, P, C={self.qkv.in_features}], got {list(x.shape)}"
            )
        if cache is not None:
            B = x.shape[0]
            expected = (B, self.num_heads, self.key_dim, self.value_dim)
            if not isinstance(cache, GLACache):
                raise TypeError(f"GLAMemory: cache must be a GLACache or None, got {type(cache).__name__}")
            if tuple(cache.state.shape) != expected:
                raise ValueError(
                    f"GLAMemory: cache.state must be {list(expected)}, got {list(cache.state.shape)}"
                )
            conv_expected = (B, self.qkv_dim, self.conv_size - 1)
            if tuple(cache.conv_state.shape) != conv_expected:
                raise ValueError(
                    f"GLAMemory: cache.conv_state must be {list(conv_expected)},"
                    f" got {list(cache.conv_state.shape)}"
                )

    def forward(self, x: torch.Tensor, cache: GLACache | None = None) -> tuple[torch.Tensor, GLACache]:
        """x: [B, T, P, C] (T frames of P tokens) -> (y [B, T, P, C], cache after the last token)."""
        self._check(x, cache)
        B, T, P, C = x.shape
        H, K, V = self.num_heads, self.key_dim, self.value_dim
        if cache is None:
            cache = self.init_cache(B, x.device)
        tokens = x.reshape(B, T * P, C)
        L = T * P

        # Short causal depthwise convolution over the token stream, continuing the cached history.
        pre = self.qkv(tokens).transpose(1, 2)  # [B, D, L]
        history = torch.cat([cache.conv_state.to(pre.dtype), pre], dim=2)  # [B, D, conv_size - 1 + L]
        qkv = F.silu(F.conv1d(history, self.conv.weight.to(pre.dtype), groups=self.qkv_dim))
        conv_state = history[:, :, history.shape[2] - (self.conv_size - 1):].float()
        q, k, v = qkv.transpose(1, 2).split([H * K, H * K, H * V], dim=-1)
        q = F.normalize(q.reshape(B, L, H, K), dim=-1)
        k = F.normalize(k.reshape(B, L, H, K), dim=-1)
        v = v.reshape(B, L, H, V)

        gate = self.gate_up(self.gate_down(tokens)).float()
        g = (F.logsigmoid(gate) / self.gate_normalizer).clamp(min=self.gate_min)
        g = g.reshape(B, L, H, K) if self.decay == "channel" else g.reshape(B, L, H)
        if self.delta_rule:
            beta = torch.sigmoid(self.beta_proj(tokens).float())  # [B, L, H]
            o, state = chunk_gated_delta(q, k, v.to(q.dtype), g, beta.to(q.dtype), initial_state=cache.state,
                                         output_final_state=True, chunk_size=self.chunk_size,
                                         backend=self.backend)
        else:
            if g.dim() == 3:  # one decay per head: the same for its K channels
                g = g.unsqueeze(-1).expand(B, L, H, K)
            o, state = chunk_gla(q, k, v.to(q.dtype), g, initial_state=cache.state, output_final_state=True,
                                 chunk_size=self.chunk_size, backend=self.backend)
        o = self.out_norm(o.to(x.dtype)) * torch.sigmoid(self.out_gate(tokens)).reshape(B, L, H, V)
        y = self.out_proj(o.reshape(B, L, H * V)).reshape(B, T, P, C)
        return y, GLACache(state=state, conv_state=conv_state)
