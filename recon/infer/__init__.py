"""Streaming inference: frame sources, the per-frame runner, writers, point map, Rerun logger."""
