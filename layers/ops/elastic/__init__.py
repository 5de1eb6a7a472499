"""Elastic TTT (FSM / LaCET): sequential reference (static or data-dependent importance, three
anchor policies) and the exact parallel form for static importance (see README.md)."""

from layers.ops.elastic.parallel import elastic_components, elastic_decay, elastic_parallel
from layers.ops.elastic.sequential import (
    ANCHOR_POLICIES,
    IMPORTANCE_ESTIMATORS,
    ElasticState,
    elastic_apply,
    elastic_chunk_step,
    elastic_sequential,
    init_elastic_state,
)

__all__ = [
    "ANCHOR_POLICIES",
    "IMPORTANCE_ESTIMATORS",
    "ElasticState",
    "elastic_apply",
    "elastic_chunk_step",
    "elastic_components",
    "elastic_decay",
    "elastic_parallel",
    "elastic_sequential",
    "init_elastic_state",
]
