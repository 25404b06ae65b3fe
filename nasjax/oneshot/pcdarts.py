"""PC-DARTS: partial channel connections and edge normalisation (Xu et al., "PC-DARTS: Partial Channel
Connections for Memory-Efficient Architecture Search", ICLR 2020).

Each edge mixes only 1/K of its input channels (the supernet's static ``partial_channels``) and passes the
rest through; to stabilise the edge choice that this sampling makes noisy, every edge also has a weight
``beta``, softmax-normalised over the edges entering the same node, which scales the edge's mixture and
multiplies the op strength when the genotype is derived.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nasjax.nn.supernet import edge_endpoints
from nasjax.oneshot.method import CELL_TYPES, Method, init_logits, softmax_probabilities


def _num_nodes(num_edges: int) -> int:
  n, e = 0, 0
  while e < num_edges:
    e += n + 2
    n += 1
  if e != num_edges:
    raise ValueError(f"{num_edges} edges is not a DARTS-style cell")
  return n


def edge_normalisation(beta: jax.Array) -> jax.Array:
  """Softmax of ``beta`` over the edges that enter the same node (segment softmax)."""
  num_nodes = _num_nodes(beta.shape[0])
  dst = jnp.asarray(edge_endpoints(num_nodes)[1])
  peak = jax.ops.segment_max(beta, dst, num_nodes)[dst]
  e = jnp.exp(beta - jax.lax.stop_gradient(peak))
  return e / jax.ops.segment_sum(e, dst, num_nodes)[dst]


def pcdarts(partial_channels: int = 4) -> Method:
  def init_arch(key, num_edges, num_ops):
    k_alpha, k_beta = jax.random.split(key)
    params = init_logits(k_alpha, num_edges, num_ops)
    keys = jax.random.split(k_beta, len(CELL_TYPES))
    params.update({f"{c}_edges": 1e-3 * jax.random.normal(k, (num_edges,), jnp.float32)
                   for c, k in zip(CELL_TYPES, keys)})
    return params

  def edge_strength(arch_params):
    return {c: edge_normalisation(arch_params[f"{c}_edges"]) for c in CELL_TYPES}

  def mix(arch_params, key, progress):
    del key, progress
    probs, edges = softmax_probabilities(arch_params), edge_strength(arch_params)
    # The mixed op is linear in its weights, so scaling them scales the edge output.
    return {c: probs[c] * edges[c][:, None] for c in CELL_TYPES}

  return Method("pcdarts", init_arch, mix, softmax_probabilities, edge_strength=edge_strength,
                partial_channels=partial_channels)
