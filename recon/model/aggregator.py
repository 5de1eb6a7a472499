"""The aggregator: frames -> tokens -> blocks (frame, local spatiotemporal, memory) -> token levels.

One call processes T consecutive frames that follow the frames summarised by ``state``; a clip is
T > 1 frames (parallel: banded block-causal local attention, chunked memory forms) and a streamed
frame is T = 1. Both go through exactly the same modules and code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from layers.registry import build_memory
from layers.rope import SpatioTemporalRoPE
from recon.errors import ConfigError
from recon.model.blocks import FrameBlock, LocalBlock, MemoryBlock
from recon.model.config import ModelConfig, slot_offsets
from recon.model.embed import FrameEmbedding
from recon.model.state import KVWindow


class Aggregator(nn.Module):
    """Tokenise frames and run the alternating attention blocks with memory layers in between.

    Block ``i`` = FrameBlock (within each frame) then LocalBlock (over the last W frames); a
    MemoryBlock follows block ``i`` when ``i`` is in ``cfg.memory.depths``.

    Args:
        cfg: the model config.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = FrameEmbedding(cfg.dim, cfg.patch_size, cfg.image_size, cfg.num_register_tokens,
                                    len(slot_offsets(cfg.head)) * cfg.head.pose_tokens_per_slot,
                                    cfg.absolute_position)
        head_dim = cfg.dim // cfg.num_heads
        self.rope_space = SpatioTemporalRoPE(head_dim, cfg.rope_theta_space, cfg.rope_theta_time, 0.0)
        self.rope_spacetime = SpatioTemporalRoPE(head_dim, cfg.rope_theta_space, cfg.rope_theta_time,
                                                 cfg.rope_time_fraction)
        self.frame_blocks = nn.ModuleList(
            FrameBlock(cfg.dim, cfg.num_heads, cfg.mlp_ratio, self.rope_space) for _ in range(cfg.depth))
        self.local_blocks = nn.ModuleList(
            LocalBlock(cfg.dim, cfg.num_heads, cfg.mlp_ratio, cfg.window, self.rope_spacetime)
            for _ in range(cfg.depth))
        mem_heads = cfg.memory.num_heads or cfg.num_heads
        memory = {}
        for i in sorted(cfg.memory.depths):
            try:
                layer = build_memory(cfg.memory.type, cfg.dim, mem_heads, cfg.memory.options)
            except ConfigError:
                raise
            except ValueError as e:  # a value the layer refuses (a range), named like a config key
                raise ConfigError(f"model.memory.options ({cfg.memory.type}): {e}") from e
            if layer is not None:
                memory[str(i)] = MemoryBlock(cfg.dim, layer, cfg.mlp_ratio, cfg.memory.layer_scale)
        self.memory_blocks = nn.ModuleDict(memory)
        self.norm = nn.LayerNorm(cfg.dim)

    @property
    def num_tokens(self) -> int:
        """Tokens per frame."""
        return self.embed.num_tokens

    def init_caches(self, batch_size: int, device: torch.device | str | None
                    ) -> tuple[list[KVWindow], list[Any]]:
        """Empty local-attention windows (one per block) and memory caches (one per memory layer)."""
        windows = [blk.attn.empty_window(batch_size, self.num_tokens, device) for blk in self.local_blocks]
        memory = [blk.init_cache(batch_size, device) for blk in self.memory_blocks.values()]
        return windows, memory

    def forward(self, video: torch.Tensor, frame_index: int, windows: list[KVWindow], memory: list[Any]
                ) -> tuple[list[torch.Tensor], torch.Tensor, list[KVWindow], list[Any]]:
        """Run T frames.

        Args:
            video: [B, T, 3, H, W] RGB in [0, 1].
            frame_index: absolute index of ``video[:, 0]`` in its sequence.
            windows: per block, the key/value window before ``video[:, 0]``.
            memory: per memory layer, its cache before ``video[:, 0]``.

        Returns:
            (levels: per ``cfg.head.levels`` entry, tokens [B, T, N, C] after that block;
             final: normalised tokens [B, T, N, C] after the last block;
             new windows; new memory caches).
        """
        B, T = video.shape[:2]
        x = self.embed(video.flatten(0, 1))
        x = x.view(B, T, *x.shape[1:])
        pos = self.embed.pos_yx
        new_windows, new_memory, levels = [], [], {}
        mem_iter = iter(memory)
        for i in range(self.cfg.depth):
            x = self.frame_blocks[i](x, pos)
            x, win = self.local_blocks[i](x, pos, windows[i], frame_index)
            new_windows.append(win)
            if str(i) in self.memory_blocks:
                x, cache = self.memory_blocks[str(i)](x, next(mem_iter))
                new_memory.append(cache)
            levels[i] = x
        return [levels[i] for i in self.cfg.head.levels], self.norm(x), new_windows, new_memory
