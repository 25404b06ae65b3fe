"""Discrete networks built from a cell genotype (the evaluation networks of DARTS, NASNet, AmoebaNet, ENAS).

Structure as in the DARTS evaluation code (Liu et al. 2019), which also reproduces the NASNet-A (Zoph et
al. 2018) and AmoebaNet-A (Real et al. 2019) CIFAR networks: a stem, ``layers`` cells with reduction cells
at 1/3 and 2/3 of the depth, an optional auxiliary head after the second reduction (Szegedy et al. 2015),
drop-path on every op but the identity (Larsson et al. 2017), global pooling and a linear classifier.
Parameter counts "as the papers count them" leave the auxiliary head out (:func:`count_params`).

Runs of identical cells (same genotype, same input shapes) can be an ``nn.scan``, which makes compilation
independent of depth. XLA:CPU runs while-loop bodies several times slower than straight-line code, so
``scan_cells="auto"`` unrolls on CPU and scans on accelerators.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError
from nasjax.nn.conv import resolve_conv_impl
from nasjax.nn.ops import OPS, Impl, OpConfig, batch_norm, conv, make_op, op_spec, preprocess_cell_inputs
from nasjax.nn.supernet import reduction_layers

AUX_NAME = "auxiliary_head"
STEMS = ("cifar", "imagenet")


def drop_path(x: jax.Array, rate: jax.Array, rng: jax.Array) -> jax.Array:
  """Zeroes whole examples with probability ``rate`` and rescales the rest (FractalNet's drop-path)."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, 0.0)


def cell_nodes(cell) -> tuple[tuple[tuple[str, int], tuple[str, int]], ...]:
  """Groups a genotype cell's flat (op, input) list into pairs, one pair per node."""
  cell = tuple(cell)
  if len(cell) % 2:
    raise NasjaxError(f"a cell needs two (op, input) entries per node, got {len(cell)} entries")
  return tuple((cell[i], cell[i + 1]) for i in range(0, len(cell), 2))


class Cell(nn.Module):
  """One discrete cell: node k = op_a(state[in_a]) + op_b(state[in_b]); output = concat of ``concat``."""
  nodes: tuple[tuple[tuple[str, int], tuple[str, int]], ...]
  concat: tuple[int, ...]
  channels: int
  reduction: bool
  reduction_prev: bool
  affine: bool = True
  impl: Impl = Impl(conv="xla")

  @nn.compact
  def __call__(self, s0, s1, train: bool = False, drop_prob: Any = 0.0):
    c = self.channels
    s0, s1 = preprocess_cell_inputs(s0, s1, c, self.reduction_prev, self.affine, train)
    states = [s0, s1]
    for k, pair in enumerate(self.nodes):
      total = None
      for slot, (op_name, source) in enumerate(pair):
        if not 0 <= source < len(states):
          raise NasjaxError(f"node {k + 2} reads state {source}, but only states 0..{len(states) - 1} "
                            "exist before it")
        stride = 2 if self.reduction and source < 2 else 1
        op = make_op(op_name, OpConfig(c, stride, self.affine, self.impl))
        h = op(states[source], train)
        if train and not (op_spec(op_name).is_identity and stride == 1):
          h = drop_path(h, drop_prob, self.make_rng("dropout"))
        total = h if total is None else total + h
      states.append(total)
    return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class AuxiliaryHead(nn.Module):
  """Auxiliary classifier of the DARTS/NASNet CIFAR networks (8x8 inputs; adapts to smaller maps)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(x)
    window = min(5, x.shape[1])
    x = nn.avg_pool(x, (window, window), (3, 3), "VALID")
    x = nn.relu(batch_norm(train, True)(conv(128, (1, 1))(x)))
    k = min(2, x.shape[1])
    x = nn.Conv(768, (k, k), padding="VALID", use_bias=False)(x)
    x = nn.relu(batch_norm(train, True)(x))
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def _cell_carry(train: bool):
  def body(mdl, carry, drop_prob):
    s0, s1 = carry
    return (s1, mdl(s0, s1, train, drop_prob)), None
  return body


class Network(nn.Module):
  """The evaluation network of a cell genotype.

  Attributes:
    genotype: a ``nasjax.spaces.Genotype`` (normal/reduce cells and their concat lists).
    channels: initial channels C (36 for the DARTS CIFAR-10 network).
    layers: number of cells (20 on CIFAR-10).
    num_classes: classifier outputs.
    auxiliary: adds the auxiliary head after the second reduction cell.
    stem: "cifar" (3x3 conv to 3C) or "imagenet" (three stride-2 convolutions, DARTS' ImageNet stem).
    impl: how the ops are written (:class:`nasjax.nn.ops.Impl`). Its ``conv="auto"`` is the canonical
      convolutions with their own gradients on CPU (with the shifted-slice depthwise gradient they
      bring), XLA's elsewhere; on this project's 2-core CPU the canonical form made a DARTS_V2 training
      step (16 channels, 8 cells, batch 64, 28x28x1) 1.44 s -> 1.35 s. ``nasjax.nn.ops.XLA_IMPL`` is
      XLA's own primitives throughout, what parameter and multiply-add counters read.
    dw_impl, conv_impl: deprecated spellings of ``impl.depthwise`` and ``impl.conv`` (None: ``impl``'s),
      kept until every caller passes ``impl``.
    scan_cells: "auto", True or False (see module docstring).
  """
  genotype: Any
  channels: int = 36
  layers: int = 20
  num_classes: int = 10
  auxiliary: bool = False
  stem: str = "cifar"
  stem_multiplier: int = 3
  affine: bool = True
  impl: Impl = Impl()
  dw_impl: str | None = None
  conv_impl: str | None = None
  scan_cells: Any = "auto"

  def _impl(self) -> Impl:
    """``impl`` with the deprecated ``dw_impl`` / ``conv_impl`` applied and ``conv`` resolved."""
    impl = self.impl
    if self.dw_impl is not None:
      impl = dataclasses.replace(impl, depthwise=self.dw_impl)
    if self.conv_impl is not None:
      impl = dataclasses.replace(impl, conv=self.conv_impl)
    return dataclasses.replace(impl, conv=resolve_conv_impl(impl.conv))

  def _validate(self):
    if self.stem not in STEMS:
      raise NasjaxError(f"unknown stem {self.stem!r}; accepted: {', '.join(STEMS)}")
    for kind in ("normal", "reduce"):
      for op, _ in getattr(self.genotype, kind):
        if op not in OPS or OPS[op].is_zero:
          raise NasjaxError(f"{kind} cell uses op {op!r}; accepted ops: "
                            f"{', '.join(sorted(o for o, spec in OPS.items() if not spec.is_zero))}")
    if self.layers < 1 or self.channels < 2 or self.channels % 2:
      raise NasjaxError(f"need layers >= 1 and an even channel count >= 2, got layers={self.layers}, "
                        f"channels={self.channels}")

  @nn.compact
  def __call__(self, x, train: bool = False, drop_path_prob: Any = 0.0):
    """Returns ``(logits, aux_logits)``; ``aux_logits`` is None without an auxiliary head."""
    self._validate()
    if x.ndim != 4:
      raise NasjaxError(f"network input must be NHWC (4-D), got shape {x.shape}")
    c = self.channels
    normal = cell_nodes(self.genotype.normal)
    reduce = cell_nodes(self.genotype.reduce)
    normal_concat = tuple(self.genotype.normal_concat)
    reduce_concat = tuple(self.genotype.reduce_concat)
    if self.stem == "cifar":
      s = batch_norm(train, True, name="stem_bn")(conv(self.stem_multiplier * c, (3, 3), name="stem_conv")(x))
      s0 = s1 = s
      reduction_prev = False
    else:
      s = nn.relu(batch_norm(train, True)(conv(c // 2, (3, 3), 2, name="stem0_conv0")(x)))
      s0 = batch_norm(train, True)(conv(c, (3, 3), 2, name="stem0_conv1")(s))
      s1 = batch_norm(train, True)(conv(c, (3, 3), 2, name="stem1_conv")(nn.relu(s0)))
      reduction_prev = True

    impl = self._impl()
    reductions = reduction_layers(self.layers)
    aux_after = 2 * self.layers // 3
    scan = self.scan_cells
    if scan == "auto":
      scan = jax.default_backend() != "cpu"
    aux_logits = None
    i = 0
    cur = c
    while i < self.layers:
      reduction = i in reductions
      cur = cur * 2 if reduction else cur
      nodes, concat = (reduce, reduce_concat) if reduction else (normal, normal_concat)
      cell_args = (nodes, concat, cur, reduction, reduction_prev, self.affine, impl)
      # A run of cells can share one scanned body when their inputs already have the cell's output
      # shape (normal cells after two normal cells of the same stage); a run ends at the aux head.
      run = 1
      if (scan and not reduction and not reduction_prev and s0.shape == s1.shape
          and s1.shape[-1] == len(concat) * cur):
        while i + run < self.layers and (i + run) not in reductions and i + run - 1 != aux_after:
          run += 1
      if run > 1:
        scanned = nn.scan(_cell_carry(train), variable_axes={"params": 0, "batch_stats": 0},
                          split_rngs={"params": True, "dropout": True}, length=run)
        (s0, s1), _ = scanned(Cell(*cell_args, name=f"cells_{i}_to_{i + run - 1}"), (s0, s1),
                              jnp.broadcast_to(jnp.asarray(drop_path_prob, jnp.float32), (run,)))
        i += run
        reduction_prev = False
        if self.auxiliary and i - 1 == aux_after:
          aux_logits = AuxiliaryHead(self.num_classes, name=AUX_NAME)(s1, train)
        continue
      s0, s1 = s1, Cell(*cell_args, name=f"cell_{i}")(s0, s1, train, drop_path_prob)
      reduction_prev = reduction
      if self.auxiliary and i == aux_after:
        aux_logits = AuxiliaryHead(self.num_classes, name=AUX_NAME)(s1, train)
      i += 1
    logits = nn.Dense(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))
    return logits, aux_logits


def abstract_variables(net: nn.Module, input_shape) -> dict:
  """``net``'s variables for one NHWC image of ``input_shape`` as shapes only (nothing is computed).

  What parameter counts and size matching need: ``count_params(abstract_variables(net, s)["params"])``.
  """
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  return jax.eval_shape(lambda k: net.init({"params": k, "dropout": k}, x), jax.random.key(0))
