"""Resource-aware one-shot search: the expected cost of the architecture distribution as a penalty.

Hardware-aware differentiable NAS adds a cost term to the architecture objective: SNAS's resource
constraint (Xie et al., ICLR 2019), FBNet's latency loss (Wu et al., CVPR 2019), ProxylessNAS (Cai et al.,
ICLR 2019). The parameters and multiply-adds of a cell network are sums over its edges of the chosen op's
cost, so the cost of a cell whose edges pick ops independently is linear in the one-hot choices, and its
expectation under the method's op probabilities ``p`` is exactly ``sum_e sum_o p[e, o] * c[e, o]``. The
gradient of that expectation is exact and noise-free (SNAS estimates its constraint's gradient by the
score function instead).

``c[e, o]`` is the cost of op ``o`` on edge ``e`` summed over every cell of that type in the network the
supernet stands for (channels double and resolution halves at the reductions), counted on the discrete
network's op (affine BatchNorm, grouped depthwise convolutions, as :mod:`nasjax.nn.count` counts), or its
latency measured on the current device (:mod:`nasjax.oneshot.latency`, FBNet's and ProxylessNAS' latency
model: a network's latency is the sum of its ops'). A
supernet has all 14 edges of a DARTS cell while a derived cell keeps 8, so the expectation is a relaxation
of the derived network's edge cost, not equal to it; fixed parts (stem, cell pre-processing, classifier)
do not depend on the architecture and are left out.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.count import count_macs, count_params
from nasjax.nn.ops import XLA_IMPL, OpConfig, make_op
from nasjax.nn.supernet import edge_endpoints, reduction_layers
from nasjax.oneshot.method import CELL_TYPES

COST_METRICS = ("params", "flops")  # counted from the op's program
SEARCH_COST_METRICS = COST_METRICS + ("latency",)  # latency: milliseconds measured on the current device


@functools.lru_cache(maxsize=None)
def op_cost(op: str, channels: int, stride: int, height: int, width: int, metric: str) -> int:
  """Parameters or multiply-adds (one image) of ``op`` at ``channels`` on a ``height x width`` input."""
  if metric not in COST_METRICS:
    raise NasjaxError(f"unknown cost metric {metric!r}; accepted: {', '.join(COST_METRICS)}")
  module = make_op(op, OpConfig(channels, stride, affine=True, impl=XLA_IMPL))
  x = jax.ShapeDtypeStruct((1, height, width, channels), jnp.float32)
  # Shapes only: nothing is initialised or run.
  variables = jax.eval_shape(lambda k, x: module.init(k, x, False), jax.random.key(0), x)
  if metric == "params":
    return count_params(variables.get("params", {}))
  return count_macs(lambda v, x: module.apply(v, x, False), variables, x)


def edge_positions(num_nodes: int, channels: int, layers: int, input_shape: Sequence[int]):
  """``(cell type, edge, channels, stride, height, width)`` of every edge of every cell, the edge's input shape.

  Follows the supernet's layout (:class:`nasjax.nn.supernet.Supernet`): the stem keeps the resolution,
  a reduction cell doubles the channels and its edges from the two inputs have stride 2.
  """
  src, _ = edge_endpoints(num_nodes)
  height, width = int(input_shape[0]), int(input_shape[1])
  c = channels
  for i in range(layers):
    reduction = i in reduction_layers(layers)
    c = c * 2 if reduction else c
    out_h, out_w = (-(-height // 2), -(-width // 2)) if reduction else (height, width)
    for e, source in enumerate(src):
      stride = 2 if reduction and source < 2 else 1
      h, w = (height, width) if stride == 2 else (out_h, out_w)
      yield "reduce" if reduction else "normal", e, c, stride, h, w
    height, width = out_h, out_w


def edge_cost_tables(ops: Sequence[str], num_nodes: int, channels: int, layers: int,
                     input_shape: Sequence[int], metric: str,
                     op_cost_fn: Callable[[str, int, int, int, int], float] | None = None) -> dict[str, np.ndarray]:
  """``{"normal", "reduce"}`` of f64[E, O]: cost of op ``o`` on edge ``e`` summed over that type's cells.

  ``op_cost_fn(op, channels, stride, height, width)`` prices one op at one position (default: ``metric``
  counted by :func:`op_cost`; for latency, :meth:`nasjax.oneshot.latency.LatencyTable.op_ms`).
  """
  cost = op_cost_fn or (lambda op, c, stride, h, w: op_cost(op, c, stride, h, w, metric))
  src, _ = edge_endpoints(num_nodes)
  tables = {kind: np.zeros((len(src), len(ops))) for kind in CELL_TYPES}
  for kind, e, c, stride, h, w in edge_positions(num_nodes, channels, layers, input_shape):
    tables[kind][e] += [cost(op, c, stride, h, w) for op in ops]
  return tables


def expected_cost(probabilities: dict, tables: dict):
  """``sum over cell types, edges and ops of p * c``: the exact expected edge cost of the distribution."""
  return sum(jnp.sum(probabilities[kind] * tables[kind]) for kind in CELL_TYPES)


def budget_penalty(probabilities: dict, tables: dict, target: float = 0.0):
  """``E[c]`` without a target; with one, the hinge ``max(0, E[c] - target)``.

  The hinge is the exact penalty of the constraint ``E[c] <= target``: zero inside the budget, where the
  validation loss alone moves the architecture, so a target budget picks the most accurate cell that fits
  it instead of ever cheaper ones. FBNet's multiplicative ``CE * a * log(LAT)^b`` and MnasNet's
  ``ACC * (LAT / T)^w`` (Tan et al., CVPR 2019) keep pulling below the target and rescale the loss's own
  gradient, which a bilevel hypergradient then carries too; ProxylessNAS' additive ``lambda * E[lat]`` is
  this function without a target.
  """
  cost = expected_cost(probabilities, tables)
  return cost if not target else jnp.maximum(cost - target, 0.0)


def uniform_cost(tables: dict) -> float:
  """Expected edge cost when every op of every edge is equally likely (a new supernet's distribution)."""
  return float(sum(np.mean(tables[kind], axis=-1).sum() for kind in CELL_TYPES))


def derived_cost(arch: Sequence[int], space, tables: dict) -> float:
  """Edge cost of a discrete cell pair of a :class:`~nasjax.spaces.CellSpace`, from the same tables.

  Every chosen (input, op) of every node counts, a node reading one input twice included.
  """
  _, dst = edge_endpoints(space.num_nodes)
  first_edge = np.searchsorted(dst, np.arange(space.num_nodes))  # edges are ordered by destination node
  edges = first_edge[None, :, None] + np.asarray(space.node_inputs(arch))  # [cell type, node, 2]
  ops = np.asarray(space.node_ops(arch)) + 1  # supernet_ops = ('none',) + ops
  return float(sum(tables[kind][edges[i], ops[i]].sum() for i, kind in enumerate(CELL_TYPES)))
