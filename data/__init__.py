"""Datasets: the sample schema, readers for standard layouts, and the synthetic 4D generator.

``load_sequence(root, format=None)`` reads one sequence as distributed (format detected from its
marker files) into :class:`Sequence` of :class:`Frame` (OpenCV camera, cam2world, metres, pixels).
``FORMATS`` lists the accepted format names; ``list_formats()`` adds a one-line layout each.
"""

from data.readers.registry import FORMATS, detect_format, list_formats, load_sequence
from data.schema import Frame, Sequence

__all__ = ["FORMATS", "Frame", "Sequence", "detect_format", "list_formats", "load_sequence"]
