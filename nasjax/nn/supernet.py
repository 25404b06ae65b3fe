"""The one weight-sharing supernet of cell search spaces (DARTS, GDAS, PC-DARTS, SPOS, ENAS, ...).

``Supernet.apply(variables, x, arch, train=...)`` takes either

* relaxed architecture weights, ``{"normal": f32[E, O], "reduce": f32[E, O]}`` (a softmax as in DARTS,
  Liu et al. 2019; a Gumbel sample as in GDAS, Dong & Yang 2019; edge-normalised weights as in PC-DARTS,
  Xu et al. 2020, multiplied in by the caller), where every candidate op of every edge is computed and
  mixed; with ``hard=True`` only the arg-max op of each edge is computed and scaled by its weight, which
  carries the straight-through gradient of a hard Gumbel sample;
* a discrete architecture, the same dict (or an int32[2, E] array) of op indices per edge; then only the
  chosen op is computed (``lax.switch``) with the same weights, which is weight sharing (ENAS, SPOS).

Layout for speed. Edges of the same kind (stride and shapes) form an :class:`EdgeStack` whose variables
are stacked on an edge axis and whose edges run as one ``lax.scan``: one traced and compiled edge per
kind instead of one per edge (see :func:`resolve_edge_loop`). All edges of a normal cell are one kind
(``all_edges``); a reduction cell has its strided ``input_edges`` and its ``node_edges``. Two consecutive
normal cells of the same shape run as the two steps of one more scan (:func:`cell_pairs`), and the
edges of one kind share one jitted edge function, so they are traced once (:func:`_edge_function`).
Convolutions, depthwise convolutions and pools are written the way each backend runs them fastest
(``nasjax.nn.conv``, ``nasjax.nn.ops``).
Partial-channel connections (PC-DARTS) are a static ``partial_channels`` K: each edge mixes C/K channels
and passes the rest through, then shuffles.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.ops import (Impl, OpConfig, batch_norm, conv, make_op, op_spec, preprocess_cell_inputs,
                           preprocess_s0, preprocess_s1, switch_ops)

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
  """One op of a mixed edge; pools get a BN without affine, as in the DARTS supernet (``pool_bn``: a
  discrete network that computes one op per edge, as ENAS's shared cells do, has none)."""
  op: str
  config: OpConfig
  pool_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    y = make_op(self.op, self.config)(x, train)
    if self.pool_bn and op_spec(self.op).is_pool:
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
  partial_channels: int = 1
  impl: Impl = Impl(conv="xla")
  pool_bn: bool = True

  def setup(self):
    config = OpConfig(self.channels // self.partial_channels, self.stride, self.affine, self.impl)
    self.candidates = [Candidate(op, config, self.pool_bn) for op in self.ops]

  def _switch(self, index, x, train):
    branches = [lambda mdl, x, i=i: mdl.candidates[i](x, train) for i in range(len(self.ops))]
    return switch_ops(self, index, branches, x)

  def __call__(self, x, weights, mode: str, train: bool):
    k = self.partial_channels
    active, passive = x[..., :x.shape[-1] // k], x[..., x.shape[-1] // k:]
    if mode == "relaxed":
      zero = [op_spec(op).is_zero for op in self.ops]
      y = sum(weights[i] * self.candidates[i](active, train) for i in range(len(self.ops)) if not zero[i])
      if all(zero):
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


EDGE_LOOPS = ("auto", "scan", "unroll")


def resolve_edge_loop(mode: str) -> str:
  """"scan" runs a cell's edges of one kind as the steps of one ``lax.scan``, "unroll" one by one.

  Scanning traces and compiles one edge per kind instead of every edge: on this 2-core CPU one DARTS
  cell's forward + backward (C=16, all 8 ops) had 2,241 fused kernels and compiled in 25 s unrolled,
  368 kernels and 4.5 s scanned. XLA:CPU only keeps its fast convolutions inside loops with the
  canonical convolutions of :mod:`nasjax.nn.conv` (autodiff's own backward convolutions run ~15x
  slower there), which the scanned edges use. A "vmap" over edges is not offered: with per-edge inputs
  and kernels it becomes a grouped convolution, which XLA:CPU ran 5-8x slower than the loop.

  The scanned edges differentiate with custom gradients (reverse mode and forward-over-reverse, which
  covers DARTS' exact second order); pure forward mode (``jax.jvp`` / ``jacfwd`` of the supernet) needs
  "unroll", which is plain autodiff throughout.
  """
  if mode == "loop":
    mode = "unroll"
  if mode not in EDGE_LOOPS:
    raise NasjaxError(f"unknown edge loop {mode!r}; accepted: {', '.join(EDGE_LOOPS)}")
  return "scan" if mode == "auto" else mode


# Abstract parameters of each EdgeStack configuration, recorded when one is initialised. On every apply,
# Flax checks an existing parameter against its initialiser traced abstractly, which for an EdgeStack is a
# forward pass of every candidate op: ~1/6 of tracing the paper-size weights step. With the shapes
# recorded at init the check costs nothing; a configuration never initialised in this process (params
# restored from elsewhere) keeps Flax's check. The key leaves the batch size out: variables are usually
# initialised on a couple of images and applied to whole batches.
_STACK_PARAM_SHAPES: dict[tuple, dict[str, tuple]] = {}


def _param_shapes(tree) -> dict[str, tuple]:
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


class EdgeStack(nn.Module):
  """A run of mixed-op edges of one kind (same stride and shapes), variables stacked on an edge axis.

  Edge ``e`` reads ``inputs[sources[e]]`` (or ``nodes[sources[e]]`` when ``inputs`` is None) and adds
  its output to ``nodes[targets[e]]``; edges run in the given order, so a source node must be complete
  before its first outgoing edge. Relaxed weights compute every candidate op of an edge, a hard sample
  or a discrete architecture only the chosen one (``lax.switch``); all modes read and write the same
  variables, which is what weight sharing means.
  """
  ops: tuple[str, ...]
  channels: int
  stride: int
  affine: bool
  impl: Impl
  partial_channels: int
  num_edges: int
  edge_loop: str = "auto"
  remat: bool = False
  pool_bn: bool = True

  @nn.compact
  def __call__(self, inputs, nodes, sources, targets, weights, mode: str, train: bool):
    # Unbound on purpose: its variables live stacked in this module, and it is applied functionally.
    scan = resolve_edge_loop(self.edge_loop) == "scan"
    # Inside the scan, XLA:CPU needs the canonical convolutions (nasjax.nn.conv) and the in-place
    # gradient of _buffer_edge; unrolled edges keep plain autodiff, which every JAX transform accepts.
    impl = self.impl
    if impl.conv == "auto":
      impl = dataclasses.replace(impl, conv="canonical" if scan and jax.default_backend() == "cpu" else "xla")
    mixed = MixedOp(self.ops, self.channels, self.stride, self.affine, self.partial_channels, impl, self.pool_bn,
                    parent=None)
    example = (inputs if inputs is not None else nodes)[0]

    def init_stacked(rng):
      keys = jax.random.split(rng, self.num_edges)
      return jax.vmap(lambda k: mixed.init(k, example, weights[0], mode, True))(keys)

    # Initialise once for both collections. Flax also shape-checks an existing param by evaluating its
    # init function abstractly, so without a fresh initialisation the function must stand on its own.
    fresh = init_stacked(self.make_rng("params")) if self.is_initializing() else None
    shape_key = (self.ops, self.channels, self.stride, self.affine, impl, self.partial_channels, self.num_edges, tuple(example.shape[1:]), str(example.dtype), tuple(weights.shape),
                 str(weights.dtype), mode, self.pool_bn)
    if fresh is not None:
      _STACK_PARAM_SHAPES[shape_key] = _param_shapes(fresh.get("params", {}))
    expected = _STACK_PARAM_SHAPES.get(shape_key)
    if expected is not None and self.has_variable("params", "edges"):
      params = self.get_variable("params", "edges")
      found = _param_shapes(params)
      if found != expected:
        wrong = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise NasjaxError(f"parameters of {'/'.join(self.scope.path)} do not fit this supernet: "
                          + "; ".join(f"{k}: expected {expected.get(k)}, got {found.get(k)}" for k in wrong[:5]))
    else:
      params = self.param("edges", lambda rng: (fresh or init_stacked(rng)).get("params", {}))
    stats = self.variable("batch_stats", "edges", lambda: fresh.get("batch_stats", {}))

    edge = _edge_function(mixed, mode, train, separate_input=inputs is not None, custom_gradient=scan,
                          remat=self.remat)
    carry = (inputs, nodes) if inputs is not None else (nodes,)
    if scan:
      def body(carry, xs):
        return edge(carry, *xs)
      carry, new_stats = jax.lax.scan(
          body, carry, (params, stats.value, weights, jnp.asarray(sources), jnp.asarray(targets)))
    else:
      outs = []
      for e in range(self.num_edges):
        carry, b = edge(carry, jax.tree.map(lambda a: a[e], params), jax.tree.map(lambda a: a[e], stats.value),
                        weights[e], int(sources[e]), int(targets[e]))
        outs.append(b)
      new_stats = jax.tree.map(lambda *a: jnp.stack(a), *outs)
    nodes = carry[-1]
    if train and not self.is_initializing():
      stats.value = new_stats
    return nodes


@functools.lru_cache(maxsize=256)
def _edge_function(mixed: MixedOp, mode: str, train: bool, separate_input: bool, custom_gradient: bool,
                   remat: bool):
  """The edge of one kind (op set, channels, stride, mode, ...) as a function on state buffers.

  One function object per kind, its per-edge work under ``jax.jit``: JAX caches a jitted function's
  trace (and its derivatives' traces) by function and argument shapes, so edge stacks of the same kind
  (the two normal cells of a stage, a reduction cell's node edges and the normal cells after it) trace
  their candidate ops once instead of once per stack. That halves the tracing of the paper-size search
  step; XLA inlines the calls, so the compiled program is the same.
  """

  @jax.jit
  def apply_edge(p, b, w, x):
    variables = {"params": p, "batch_stats": b}
    if train:
      y, updates = mixed.apply(variables, x, w, mode, True, mutable=["batch_stats"])
      return y, updates.get("batch_stats", b)
    return mixed.apply(variables, x, w, mode, False), b

  return _buffer_edge(apply_edge, separate_input=separate_input, custom_gradient=custom_gradient, remat=remat)


def _buffer_edge(apply_edge, separate_input: bool, custom_gradient: bool = True, remat: bool = False):
  """One edge on state buffers: ``y = apply_edge(p, b, w, read[source])``, ``write[target] += y``.

  With its own gradient so that the backward pass updates the cotangent buffers in place (one slice per
  edge). Autodiff would transpose the read into a zero buffer of all states plus a full-buffer add, on
  every edge of the scan: at batch 64 that made a scanned DARTS cell ~1.7x slower than unrolled. The
  rule is ordinary JAX code, so forward-over-reverse (exact DARTS Hessian products) still works.
  Batch statistics (``b``, the second output) carry no gradient, like the running statistics in Flax.
  ``remat`` keeps only the edge's input for the backward pass and recomputes the edge's forward there
  (``jax.checkpoint``): the activations of all candidate ops of every edge are what a supernet's memory
  is made of.
  """
  if remat:
    # Under jit the rematerialised edge is one cached call per edge kind, like apply_edge. Paper-size
    # weight step on the 2-core CPU (2026-11-28): 4,125 -> 3,921 fusion instructions in the compiled
    # program; compile 44.2 / 46.2 s vs 45.2 / 50.7 s and the step unchanged (within this machine's noise).
    apply_edge = jax.jit(jax.checkpoint(apply_edge))

  def run(buffers, p, b, w, source, target):
    read, write = buffers if separate_input else (buffers[0], buffers[0])
    y, b_new = apply_edge(p, b, w, read[source])
    write = write.at[target].add(y)
    return ((read, write) if separate_input else (write,)), b_new

  if not custom_gradient:
    return run

  @jax.custom_vjp
  def edge(buffers, p, b, w, source, target):
    return run(buffers, p, b, w, source, target)

  def edge_fwd(buffers, p, b, w, source, target):
    read, write = buffers if separate_input else (buffers[0], buffers[0])
    differentiable_w = jnp.issubdtype(jnp.result_type(w), jnp.inexact)
    if differentiable_w:
      y, pullback, b_new = jax.vjp(lambda p, w, x: apply_edge(p, b, w, x), p, w, read[source], has_aux=True)
    else:
      y, pullback, b_new = jax.vjp(lambda p, x: apply_edge(p, b, w, x), p, read[source], has_aux=True)
    write = write.at[target].add(y)
    out = ((read, write) if separate_input else (write,)), b_new
    return out, (pullback, source, target, w if not differentiable_w else None)

  def edge_bwd(residuals, cotangents):
    pullback, source, target, int_w = residuals
    ct_buffers, _ = cotangents
    ct_write = ct_buffers[-1]
    if int_w is None:
      d_p, d_w, d_x = pullback(ct_write[target])
    else:
      (d_p, d_x), d_w = pullback(ct_write[target]), None
    if separate_input:
      ct_read = ct_buffers[0].at[source].add(d_x)
      ct_out = (ct_read, ct_write)
    else:
      ct_out = (ct_write.at[source].add(d_x),)
    return ct_out, d_p, None, d_w, None, None

  edge.defvjp(edge_fwd, edge_bwd)
  return edge


def cell_edge_order(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """The DARTS edge indices of a cell's edges from the two inputs and from intermediate nodes.

  Edges from the inputs need nothing but the inputs; edges from intermediate nodes run by source, so
  each node is complete before it is read.
  """
  src, _ = edge_endpoints(num_nodes)
  input_edges = np.flatnonzero(src < 2)
  node_edges = np.flatnonzero(src >= 2)
  return input_edges, node_edges[np.argsort(src[node_edges], kind="stable")]


class _CellFields(nn.Module):
  """What every search cell module is configured with (op set, width, edge options)."""
  ops: tuple[str, ...]
  num_nodes: int
  channels: int
  affine: bool = False
  impl: Impl = Impl()
  partial_channels: int = 1
  edge_loop: str = "auto"
  remat_edges: bool = True


class SearchCell(_CellFields):
  """A cell whose every edge is a mixed op; output = concat of all intermediate nodes (DARTS)."""
  reduction: bool = False
  reduction_prev: bool = False

  @nn.compact
  def __call__(self, s0, s1, weights, mode: str, train: bool):
    c = self.channels
    s0, s1 = preprocess_cell_inputs(s0, s1, c, self.reduction_prev, self.affine, train)
    if not self.reduction:
      return _normal_cell_edges(self, s0, s1, weights, mode, train)
    src, dst = edge_endpoints(self.num_nodes)
    input_edges, node_edges = cell_edge_order(self.num_nodes)
    common = _edge_stack_fields(self)
    batch, height, width, _ = s1.shape
    nodes = jnp.zeros((self.num_nodes, batch, -(-height // 2), -(-width // 2), c), s1.dtype)
    nodes = EdgeStack(stride=2, num_edges=len(input_edges), name="input_edges", **common)(
        jnp.stack([s0, s1]), nodes, src[input_edges], dst[input_edges], weights[jnp.asarray(input_edges)],
        mode, train)
    if len(node_edges):
      nodes = EdgeStack(stride=1, num_edges=len(node_edges), name="node_edges", **common)(
          None, nodes, src[node_edges] - 2, dst[node_edges], weights[jnp.asarray(node_edges)], mode, train)
    return jnp.concatenate(list(nodes), axis=-1)


def _edge_stack_fields(cell) -> dict:
  return dict(ops=cell.ops, channels=cell.channels, affine=cell.affine, impl=cell.impl,
              partial_channels=cell.partial_channels, edge_loop=cell.edge_loop, remat=cell.remat_edges)


def _normal_cell_edges(cell, s0, s1, weights, mode: str, train: bool):
  """A normal cell's edges on its preprocessed inputs; call from ``cell``'s compact method."""
  src, dst = edge_endpoints(cell.num_nodes)
  input_edges, node_edges = cell_edge_order(cell.num_nodes)
  # Every edge of a normal cell has the same kind: one run over [s0, s1, nodes...] in source order.
  order = np.concatenate([input_edges[np.argsort(src[input_edges], kind="stable")], node_edges])
  states = jnp.concatenate([jnp.stack([s0, s1]), jnp.zeros((cell.num_nodes, *s1.shape), s1.dtype)])
  states = EdgeStack(stride=1, num_edges=len(order), name="all_edges", **_edge_stack_fields(cell))(
      None, states, src[order], dst[order] + 2, weights[jnp.asarray(order)], mode, train)
  return jnp.concatenate(list(states[2:]), axis=-1)


class PairedCellBody(_CellFields):
  """One of two consecutive normal cells run as the two steps of one scan (see :func:`cell_pairs`).

  Its s0 arrives preprocessed (both cells' s0 exist before the pair runs); the carry is the raw s1, the
  previous cell's output, which has the same shape for both cells of a pair.
  """
  mode: str = "relaxed"
  train: bool = False

  @nn.compact
  def __call__(self, s1, s0, weights):
    s1 = preprocess_s1(s1, self.channels, self.affine, self.train)
    out = _normal_cell_edges(self, s0, s1, weights, self.mode, self.train)
    return out, out


def cell_pairs(layers: int) -> tuple[int, ...]:
  """First cells of the pairs of consecutive normal cells that the supernet runs as one scan.

  XLA compiles each loop body on its own, and a cell's edges are two loop bodies (forward and backward)
  of ~130 and ~420 fused kernels at the DARTS search size: two identical normal cells run as one scan
  compile once. A pair needs both cells' s0 before it starts (cell i's s0 comes from cell i-2, so pairs
  do not chain) and the same raw s1 shape for both (so not cell 0, whose s1 is the stem's output).
  """
  reductions, starts, i = set(reduction_layers(layers)), [], 1
  while i + 1 < layers:
    if i not in reductions and i + 1 not in reductions:
      starts.append(i)
      i += 2
    else:
      i += 1
  return tuple(starts)


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
  # How the ops are written (nasjax.nn.ops.Impl); conv "auto": canonical convolutions in scanned edges on
  # CPU, XLA's elsewhere.
  impl: Impl = Impl()
  partial_channels: int = 1
  edge_loop: str = "auto"
  # Recompute each edge's forward in the backward pass instead of storing its activations (see
  # _buffer_edge). At the paper's search size on the 2-core CPU (C=16, 8 cells, batch 64) it cut a
  # first-order DARTS step's peak memory 16.9 -> 3.6 GB and made it faster (38.8 -> 33.0 s: less memory
  # traffic outweighs the recomputed forward), and it is what lets the exact second order fit at all.
  remat_edges: bool = True
  # Two consecutive normal cells (after the first cell) run as one scan and compile once (cell_pairs).
  # Their variables are stacked under "cells_<i>_<i+1>"; False keeps one "cell_<i>" per cell.
  scan_cell_pairs: bool = True

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
    pairs = cell_pairs(self.layers) if self.scan_cell_pairs else ()
    fields = dict(affine=self.affine, impl=self.impl, partial_channels=self.partial_channels,
                  edge_loop=self.edge_loop, remat_edges=self.remat_edges)
    i = 0
    while i < self.layers:
      if i in pairs:
        # Cell i's s0 is s0, cell i+1's is s1 (the output of cell i-1): both exist now.
        first_s0 = preprocess_s0(s0, c, reduction_prev, self.affine, train, name=f"cell_{i}_preprocess0")
        second_s0 = preprocess_s0(s1, c, False, self.affine, train, name=f"cell_{i + 1}_preprocess0")
        pair = nn.scan(PairedCellBody, variable_axes={"params": 0, "batch_stats": 0},
                       split_rngs={"params": True}, in_axes=(0, nn.broadcast), length=2)(
            self.ops, self.num_nodes, c, mode=mode, train=train, **fields, name=f"cells_{i}_{i + 1}")
        _, outs = pair(s1, jnp.stack([first_s0, second_s0]), cells["normal"])
        s0, s1 = outs[0], outs[1]
        reduction_prev, i = False, i + 2
        continue
      reduction = i in reduction_layers(self.layers)
      c = c * 2 if reduction else c
      cell = SearchCell(self.ops, self.num_nodes, c, reduction=reduction, reduction_prev=reduction_prev,
                        **fields, name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, cells["reduce" if reduction else "normal"], mode, train)
      reduction_prev, i = reduction, i + 1
    return nn.Dense(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))


def reduction_layers(layers: int) -> tuple[int, ...]:
  """Indices of reduction cells: at 1/3 and 2/3 of the depth (DARTS, NASNet)."""
  return tuple(sorted({layers // 3, 2 * layers // 3})) if layers >= 3 else ()
