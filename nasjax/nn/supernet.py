"""The one weight-sharing supernet of cell search spaces (DARTS, GDAS, PC-DARTS, SPOS, ENAS, ...).

``Supernet.apply(variables, x, arch, train=...)`` takes either

* relaxed architecture weights, ``{"normal": f32[E, O], "reduce": f32[E, O]}`` (a softmax as in DARTS,
  Liu et al. 2019; a Gumbel sample as in GDAS, Dong & Yang 2019; edge-normalised weights as in PC-DARTS,
  Xu et al. 2020, multiplied in by the caller), where every candidate op of every edge is computed and
  mixed; with ``hard=True`` only the arg-max op of each edge is computed and scaled by its weight, which
  carries the straight-through gradient of a hard Gumbel sample;
* a discrete architecture, the same dict (or an int32[2, E] array) of op indices per edge; then only the
  chosen op is computed (``lax.switch``) with the same weights, which is weight sharing (ENAS, SPOS).

Layout for speed. The edges leaving one node form an :class:`EdgeGroup` whose variables are stacked on
an edge axis; the group runs its edges either one by one or as one ``jax.vmap`` (see
:func:`resolve_edge_batching` for the measurements behind the per-backend default). Depthwise
convolutions and pools are written the way each backend runs them fastest (``nasjax.nn.ops``).
Partial-channel connections (PC-DARTS) are a static ``partial_channels`` K: each edge mixes C/K channels
and passes the rest through, then shuffles.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.ops import OpConfig, batch_norm, conv, make_op, preprocess_cell_inputs

DARTS_SUPERNET_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                      "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
CELL_TYPES = ("normal", "reduce")


def num_edges(num_nodes: int) -> int:
  """Edges of a cell whose node i reads the two cell inputs and every earlier node."""
  return sum(i + 2 for i in range(num_nodes))


def edge_endpoints(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """(source, destination) of every edge, ordered by destination node then source (DARTS order)."""
  src = [j for i in range(num_nodes) for j in range(i + 2)]
  dst = [i for i in range(num_nodes) for _ in range(i + 2)]
  return np.asarray(src, np.int32), np.asarray(dst, np.int32)


class Candidate(nn.Module):
  """One op of a mixed edge; parameter-free ops get a BN without affine, as in the DARTS supernet."""
  op: str
  config: OpConfig

  @nn.compact
  def __call__(self, x, train: bool):
    y = make_op(self.op, self.config)(x, train)
    if "pool" in self.op:
      y = batch_norm(train, affine=False)(y)
    return y


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  *lead, channels = x.shape
  x = x.reshape(*lead, groups, channels // groups)
  return jnp.swapaxes(x, -1, -2).reshape(*lead, channels)


class MixedOp(nn.Module):
  """All candidate ops of one edge; ``mode`` is static: "relaxed", "hard" or "discrete"."""
  ops: tuple[str, ...]
  channels: int
  stride: int = 1
  affine: bool = False
  dw_impl: str = "auto"
  partial_channels: int = 1

  def setup(self):
    config = OpConfig(self.channels // self.partial_channels, self.stride, self.affine, self.dw_impl)
    self.candidates = [Candidate(op, config) for op in self.ops]

  def _switch(self, index, x, train):
    branches = [lambda mdl, x, i=i: mdl.candidates[i](x, train) for i in range(len(self.ops))]
    if self.is_initializing():
      # nn.switch only traces the branches; every candidate must own its variables from the start.
      for branch in branches:
        branch(self, x)
    return nn.switch(index, branches, self, x)

  def __call__(self, x, weights, mode: str, train: bool):
    k = self.partial_channels
    active, passive = x[..., :x.shape[-1] // k], x[..., x.shape[-1] // k:]
    if mode == "relaxed":
      y = sum(weights[i] * self.candidates[i](active, train)
              for i, op in enumerate(self.ops) if op != "none")
      if all(op == "none" for op in self.ops):
        y = self.candidates[0](active, train)
    elif mode == "hard":
      index = jnp.argmax(weights)
      y = self._switch(index, active, train) * weights[index]
    elif mode == "discrete":
      y = self._switch(weights, active, train)
    else:
      raise ValueError(f"unknown mixed-op mode {mode!r}")
    if k == 1:
      return y
    if self.stride > 1:
      passive = nn.max_pool(passive, (self.stride, self.stride), (self.stride, self.stride))
    return channel_shuffle(jnp.concatenate([y, passive], axis=-1), k)


def resolve_edge_batching(mode: str, backend: str | None = None) -> str:
  """"loop" runs a group's edges one by one, "vmap" as one batched op.

  Measured on XLA:CPU (2 cores, one DARTS cell, batch 32, C=16, forward+backward): loop 2.1 s, vmap
  10-16 s, and ``lax.scan`` over edges 35 s (while-loop bodies lose XLA:CPU's fast kernels). Accelerators
  get the batched form, which launches fewer, larger kernels.
  """
  if mode not in ("auto", "loop", "vmap"):
    raise NasjaxError(f"unknown edge batching {mode!r}; accepted: auto, loop, vmap")
  if mode != "auto":
    return mode
  return "loop" if (backend or jax.default_backend()) == "cpu" else "vmap"


class EdgeGroup(nn.Module):
  """The mixed ops of all edges that leave one node, with their variables stacked on an edge axis.

  Relaxed weights run the edges as one ``jax.vmap``: every candidate op becomes a single batched op (the
  pointwise convolutions one batched matmul), which keeps the compiled graph small and XLA's kernels
  large. A discrete architecture runs the edges one by one with ``lax.switch``, so only the chosen op is
  computed; both read and write the same variables, which is what weight sharing means.
  """
  ops: tuple[str, ...]
  channels: int
  stride: int
  affine: bool
  dw_impl: str
  partial_channels: int
  num_edges: int
  edge_batching: str = "auto"

  @nn.compact
  def __call__(self, x, weights, mode: str, train: bool):
    # Unbound on purpose: its variables live stacked in this module, and it is applied functionally.
    mixed = MixedOp(self.ops, self.channels, self.stride, self.affine, self.dw_impl, self.partial_channels,
                    parent=None)
    def init_stacked(rng):
      keys = jax.random.split(rng, self.num_edges)
      return jax.vmap(lambda k: mixed.init(k, x, weights[0], mode, True))(keys)

    # Initialise once for both collections. Flax also shape-checks an existing param by evaluating its
    # init function abstractly, so without a fresh initialisation the function must stand on its own.
    fresh = init_stacked(self.make_rng("params")) if self.is_initializing() else None
    params = self.param("edges", lambda rng: (fresh or init_stacked(rng)).get("params", {}))
    stats = self.variable("batch_stats", "edges", lambda: fresh.get("batch_stats", {}))

    def run(p, b, w, x):
      variables = {"params": p, "batch_stats": b}
      if train:
        y, updates = mixed.apply(variables, x, w, mode, True, mutable=["batch_stats"])
        return y, updates.get("batch_stats", b)
      return mixed.apply(variables, x, w, mode, False), b

    if mode == "relaxed" and resolve_edge_batching(self.edge_batching) == "vmap":
      ys, new_stats = jax.vmap(run, in_axes=(0, 0, 0, None))(params, stats.value, weights, x)
    else:
      outs = [run(jax.tree.map(lambda a: a[e], params), jax.tree.map(lambda a: a[e], stats.value),
                  weights[e], x) for e in range(self.num_edges)]
      ys = jnp.stack([o[0] for o in outs])
      new_stats = jax.tree.map(lambda *a: jnp.stack(a), *[o[1] for o in outs])
    if train and not self.is_initializing():
      stats.value = new_stats
    return ys


class SearchCell(nn.Module):
  """A cell whose every edge is a mixed op; output = concat of all intermediate nodes (DARTS)."""
  ops: tuple[str, ...]
  num_nodes: int
  channels: int
  reduction: bool
  reduction_prev: bool
  affine: bool = False
  dw_impl: str = "auto"
  partial_channels: int = 1
  edge_batching: str = "auto"

  @nn.compact
  def __call__(self, s0, s1, weights, mode: str, train: bool):
    c = self.channels
    s0, s1 = preprocess_cell_inputs(s0, s1, c, self.reduction_prev, self.affine, train)

    src, dst = edge_endpoints(self.num_nodes)
    states = [s0, s1]
    nodes: list = [None] * self.num_nodes
    # Node k's outgoing edges can run as soon as node k is complete, i.e. after the groups of all
    # earlier sources: sources in increasing order is a topological order.
    for source in range(self.num_nodes + 1):
      edges = np.flatnonzero(src == source)
      stride = 2 if self.reduction and source < 2 else 1
      ys = EdgeGroup(self.ops, c, stride, self.affine, self.dw_impl, self.partial_channels, len(edges),
                     self.edge_batching, name=f"from_{source}")(
          states[source], weights[jnp.asarray(edges)], mode, train)
      for y, node in zip(ys, dst[edges]):
        nodes[node] = y if nodes[node] is None else nodes[node] + y
      if source + 1 < self.num_nodes + 1 and source >= 1:
        states.append(nodes[source - 1])
    return jnp.concatenate(nodes, axis=-1)


def _split_arch(arch: Any, num_edges_: int, num_ops: int, hard: bool) -> tuple[dict, str]:
  if isinstance(arch, Mapping):
    missing = [k for k in CELL_TYPES if k not in arch]
    if missing:
      raise NasjaxError(f"architecture dict lacks {missing}; expected keys {list(CELL_TYPES)}")
    cells = {k: jnp.asarray(arch[k]) for k in CELL_TYPES}
  else:
    arch = jnp.asarray(arch)
    if arch.ndim < 1 or arch.shape[0] != 2:
      raise NasjaxError(f"architecture array must have a leading axis of 2 (normal, reduce), got shape "
                        f"{arch.shape}")
    cells = dict(zip(CELL_TYPES, arch))
  discrete = [jnp.issubdtype(v.dtype, jnp.integer) for v in cells.values()]
  if any(discrete) != all(discrete):
    raise NasjaxError("normal and reduce architectures must both be discrete (int) or both relaxed")
  if all(discrete):
    expected, mode = (num_edges_,), "discrete"
  else:
    expected, mode = (num_edges_, num_ops), ("hard" if hard else "relaxed")
  for k, v in cells.items():
    if v.shape != expected:
      raise NasjaxError(f"{k} architecture has shape {v.shape}; this supernet expects {expected} "
                        f"({num_edges_} edges x {num_ops} ops for relaxed weights, or {num_edges_} op "
                        f"indices for a discrete architecture)")
  return cells, mode


class Supernet(nn.Module):
  """DARTS-style search network: stem, ``layers`` cells (reductions at 1/3 and 2/3), classifier."""
  ops: tuple[str, ...] = DARTS_SUPERNET_OPS
  num_nodes: int = 4
  channels: int = 16
  layers: int = 8
  num_classes: int = 10
  stem_multiplier: int = 3
  affine: bool = False
  dw_impl: str = "auto"
  partial_channels: int = 1
  edge_batching: str = "auto"

  @classmethod
  def for_space(cls, space, **kwargs) -> "Supernet":
    """The supernet of a cell space (one that has ``supernet_ops`` and ``num_nodes``)."""
    return cls(ops=tuple(space.supernet_ops), num_nodes=space.num_nodes, **kwargs)

  @property
  def num_edges(self) -> int:
    return num_edges(self.num_nodes)

  @nn.compact
  def __call__(self, x, arch, train: bool = False, hard: bool = False):
    if x.ndim != 4:
      raise NasjaxError(f"supernet input must be NHWC (4-D), got shape {x.shape}")
    if self.channels % self.partial_channels:
      raise NasjaxError(f"channels {self.channels} not divisible by partial_channels "
                        f"{self.partial_channels}")
    cells, mode = _split_arch(arch, self.num_edges, len(self.ops), hard)
    c = self.stem_multiplier * self.channels
    s = conv(c, (3, 3), name="stem_conv")(x)
    s0 = s1 = batch_norm(train, affine=True, name="stem_bn")(s)
    c = self.channels
    reduction_prev = False
    for i in range(self.layers):
      reduction = i in reduction_layers(self.layers)
      c = c * 2 if reduction else c
      cell = SearchCell(self.ops, self.num_nodes, c, reduction, reduction_prev, self.affine,
                        self.dw_impl, self.partial_channels, self.edge_batching, name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, cells["reduce" if reduction else "normal"], mode, train)
      reduction_prev = reduction
    return nn.Dense(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))


def reduction_layers(layers: int) -> tuple[int, ...]:
  """Indices of reduction cells: at 1/3 and 2/3 of the depth (DARTS, NASNet)."""
  return tuple(sorted({layers // 3, 2 * layers // 3})) if layers >= 3 else ()
