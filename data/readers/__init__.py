"""Readers for standard RGB-D / 4D dataset layouts (one module per format) and their registry."""
