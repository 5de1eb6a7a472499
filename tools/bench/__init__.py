"""Benchmarks: each script prints a Markdown table and writes JSON (``--out``); see ``common.py``."""
