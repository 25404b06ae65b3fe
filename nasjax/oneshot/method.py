"""What a one-shot method is: a few pure functions over architecture parameters, not a trainer class.

A :class:`Method` says how architecture parameters are initialised, how they become the mixing weights the
:class:`~nasjax.nn.supernet.Supernet` takes (a softmax, a Gumbel sample, a Dirichlet sample, a uniformly
sampled discrete path, ...), what probability each op has (for deriving the genotype and for plots), and
an optional regulariser of the architecture loss. The bilevel loop in :mod:`nasjax.oneshot.search` pairs
any method with the same supernet, data pipeline, checkpointing and hypergradients.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

CELL_TYPES = ("normal", "reduce")


class Method(NamedTuple):
  """A one-shot NAS method.

  Attributes:
    name: registry name.
    init_arch: ``(key, num_edges, num_ops) -> arch_params`` (a pytree; empty for SPOS). A space with one
      cell type (NB201) calls it with ``cells=("normal",)`` as well: every method's parameters, mixing
      weights and probabilities then hold that cell type only.
    mix: ``(arch_params, key, progress) -> weights``: ``{"normal", "reduce"}`` of f32[E, O] relaxed weights,
      or int32[E] op indices for a discrete path. ``progress`` in [0, 1] is the fraction of the search done
      (temperature schedules read it).
    probabilities: ``arch_params -> {"normal", "reduce"}`` of f32[E, O]: the method's belief in each op,
      used to derive the genotype and in the logs.
    edge_strength: ``arch_params -> {"normal", "reduce"}`` of f32[E] multipliers of edge importance for the
      genotype (PC-DARTS edge normalisation), or None.
    regularizer: ``arch_params -> scalar`` added to the validation loss (DrNAS), or None.
    hard: whether ``mix`` returns one-hot straight-through weights, so the supernet computes only the
      chosen op of each edge (GDAS).
    bilevel: whether the method learns architecture parameters (False for SPOS, whose supernet is trained
      on uniformly sampled paths and ranked afterwards); they descend the validation loss unless
      ``single_level``.
    single_level: architecture parameters descend the training loss together with the weights, both
      gradients from one backward pass on the training batch (SNAS).
    partial_channels: PC-DARTS' K (1 = all channels).
  """
  name: str
  init_arch: Callable[[Any, int, int], Any]
  mix: Callable[[Any, Any, Any], dict]
  probabilities: Callable[[Any], dict]
  edge_strength: Callable[[Any], dict] | None = None
  regularizer: Callable[[Any], Any] | None = None
  hard: bool = False
  bilevel: bool = True
  partial_channels: int = 1
  single_level: bool = False


def init_logits(key, num_edges: int, num_ops: int, scale: float = 1e-3, cells=CELL_TYPES) -> dict:
  """DARTS initialises every logit near zero (``1e-3 * randn``), i.e. a near-uniform mixture."""
  keys = jax.random.split(key, len(cells))
  return {c: scale * jax.random.normal(k, (num_edges, num_ops), jnp.float32) for c, k in zip(cells, keys)}


def cell_types(arch_params) -> tuple[str, ...]:
  """The cell types ``arch_params`` holds, in :data:`CELL_TYPES` order (both, or "normal" alone for NB201)."""
  return tuple(c for c in CELL_TYPES if c in arch_params)


def softmax_probabilities(arch_params) -> dict:
  return {c: jax.nn.softmax(arch_params[c], axis=-1) for c in cell_types(arch_params)}
