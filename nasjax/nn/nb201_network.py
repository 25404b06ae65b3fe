"""The NAS-Bench-201 network, with the cell architecture as data.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search", ICLR 2020.
The macro skeleton every benchmark cell is trained in: a 3x3 convolution stem with C = 16 channels and
BN; three stages of N = 5 cells at C, 2C and 4C channels; between stages a residual reduction block (the
ResNet basic block of He et al., CVPR 2016, with stride 2: two ReLU-Conv-BN 3x3 convolutions, the
shortcut a 2x2 average pool followed by a 1x1 convolution); then BN, ReLU, global average pooling and a
linear classifier. A cell has 4 nodes; node ``i`` sums its edges ``j -> i`` (``j < i``), each one of the
5 ops of :data:`nasjax.spaces.NB201_OPS`, and node 3 is the cell output. Every cell of the network uses
the same cell architecture.

Two ways to build it, with the same variable names for the ops they share:

* ``genotype=None`` (default): every edge holds all 5 candidate ops, and the architecture passed to
  ``__call__`` says how they combine. This is the NB201 supernet (the benchmark's own one-shot rows train
  it, with ``affine=False``), in three modes chosen by what is passed:

  - ``int32[6]`` op indices (encoding of :class:`nasjax.spaces.NB201Space`): the discrete mode, each edge
    runs its chosen op with ``lax.switch``. One compiled program serves every architecture and
    ``jax.vmap`` over a population of architectures works (weight sharing: SPOS, the weight-sharing
    estimator, the proxies);
  - ``f32[6, 5]`` mixing weights, one row per edge over :data:`nasjax.spaces.NB201_OPS`: the relaxed mode,
    each edge is the weighted sum of its 5 ops (DARTS, DrNAS, SNAS);
  - the same with ``hard=True``: each edge computes only its arg-max op (``lax.switch``) and scales it by
    that weight, so a one-hot straight-through sample (GDAS) passes its gradient to the architecture.
* ``genotype=(op indices)``: a stand-alone network holding only the chosen ops, the network the benchmark
  trained; :func:`discrete_variables` cuts the switch network's variables down to it.

The benchmark counts the parameters of the chosen ops only ("params" in its tables, in millions, which
it calls MB): :meth:`NB201Network.count_params_for` gives that count for any architecture, jittably.
With the default sizes it reproduces the table exactly (0.073306 for the all-``none`` cell, 1.288506 for
the best-known cell).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.count import chosen_op_table, count_chosen
from nasjax.nn.ops import Impl, OpConfig, batch_norm, conv, make_op, op_spec, switch_ops
from nasjax.spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Space

_EDGE_PREFIX = "edge_"
_OP_PREFIX = "ops_"


def edge_name(source: int, destination: int) -> str:
  return f"{_EDGE_PREFIX}{source}_to_{destination}"


class NB201Edge(nn.Module):
  """One edge of a cell: the candidate ops named in ``candidates``, one of which runs."""
  candidates: tuple[str, ...]
  channels: int
  affine: bool = True
  impl: Impl = Impl(conv="xla")

  def setup(self):
    config = OpConfig(self.channels, 1, self.affine, self.impl)
    # A dict attribute names the submodules ops_<op name>, the same in switch and stand-alone networks.
    self.ops = {name: make_op(name, config) for name in self.candidates}

  def __call__(self, x, choice, train: bool, mode: str = "discrete"):
    """``choice``: the op index (mode "discrete") or the f32[ops] mixing weights ("relaxed", "hard")."""
    if len(self.candidates) == 1:
      return self.ops[self.candidates[0]](x, train)
    if mode == "relaxed":
      # A zero op contributes nothing to the sum (and no gradient to its weight), as in DARTS' MixedOp.
      return sum(choice[i] * self.ops[name](x, train) for i, name in enumerate(self.candidates)
                 if not op_spec(name).is_zero)
    branches = [lambda mdl, x, name=name: mdl.ops[name](x, train) for name in self.candidates]
    if mode == "hard":
      index = jnp.argmax(choice)
      return switch_ops(self, index, branches, x) * choice[index]
    return switch_ops(self, choice, branches, x)


class NB201Cell(nn.Module):
  """A 4-node NAS-Bench-201 cell; ``genotype`` fixes its ops, otherwise ``arch`` selects them."""
  channels: int
  affine: bool = True
  genotype: tuple[int, ...] | None = None
  impl: Impl = Impl(conv="xla")

  @nn.compact
  def __call__(self, x, arch, train: bool, mode: str = "discrete"):
    nodes = [x]
    for dst in (1, 2, 3):
      total = None
      for e, (d, src) in enumerate(NB201_EDGES):
        if d != dst:
          continue
        candidates = NB201_OPS if self.genotype is None else (NB201_OPS[self.genotype[e]],)
        y = NB201Edge(candidates, self.channels, self.affine, self.impl, name=edge_name(src, dst))(
            nodes[src], None if arch is None else arch[e], train, mode)
        total = y if total is None else total + y
      nodes.append(total)
    return nodes[3]


class ResNetReduction(nn.Module):
  """The benchmark's stage transition: a stride-2 ResNet basic block with a pooled 1x1 shortcut."""
  features: int
  affine: bool = True
  impl: Impl = Impl(conv="xla")

  @nn.compact
  def __call__(self, x, train: bool):
    y = make_op("nor_conv_3x3", OpConfig(self.features, 2, self.affine, self.impl))(x, train)
    y = make_op("nor_conv_3x3", OpConfig(self.features, 1, self.affine, self.impl))(y, train)
    shortcut = nn.avg_pool(x, (2, 2), (2, 2))
    return conv(self.features, (1, 1), name="shortcut_conv")(shortcut) + y


def _check_genotype(genotype) -> tuple[int, ...]:
  return tuple(int(v) for v in NB201Space().check(np.asarray(genotype)))


class NB201Network(nn.Module):
  """The NAS-Bench-201 CIFAR network.

  Attributes:
    channels: stem and first-stage channels C (16 in the benchmark).
    cells_per_stage: N, cells per stage (5 in the benchmark).
    num_classes: classifier outputs (10 for CIFAR-10, 100 for CIFAR-100, 120 for ImageNet16-120).
    affine: learnable BN scale and bias inside the cells' ops (the benchmark's trained networks: True).
    genotype: None for the switch network (``arch`` is an argument of ``__call__``), or the op indices of a
      fixed cell (a tuple of 6 ints in ``NB201Space`` encoding) for a stand-alone network.
    impl: how the cells' ops are written (:class:`nasjax.nn.ops.Impl`; by default XLA's convolutions with
      plain autodiff and the pooling form of the backend).

  Call as ``apply(variables, x, arch, train=..., hard=False)`` (switch network; ``arch`` an int32[6] array
  of op indices, possibly a tracer, out-of-range indices clamped as ``lax.switch`` does; or f32[6, 5]
  mixing weights, a weighted sum of every edge's ops, or with ``hard=True`` only each edge's arg-max op
  scaled by its weight) or ``apply(variables, x, train=...)`` (stand-alone network). Returns the logits.
  """
  channels: int = 16
  cells_per_stage: int = 5
  num_classes: int = 10
  affine: bool = True
  genotype: Any = None
  impl: Impl = Impl(conv="xla")

  def _validate(self, x, arch, hard: bool):
    if self.channels < 1 or self.cells_per_stage < 0 or self.num_classes < 1:
      raise NasjaxError(f"NB201Network needs channels >= 1, cells_per_stage >= 0 and num_classes >= 1; "
                        f"got {self.channels}, {self.cells_per_stage}, {self.num_classes}")
    if x.ndim != 4:
      raise NasjaxError(f"NB201Network input must be NHWC (4-D), got shape {x.shape}")
    if self.genotype is not None:
      if arch is not None:
        raise NasjaxError("this NB201Network has a fixed genotype; call it without an architecture")
      return None, "discrete"
    if arch is None:
      raise NasjaxError("this NB201Network selects its ops from an architecture: call apply(variables, x, "
                        "arch) with an int32[6] array in NB201Space encoding (or build it with genotype=)")
    arch = jnp.asarray(arch)
    relaxed_shape = (len(NB201_EDGES), len(NB201_OPS))
    if jnp.issubdtype(arch.dtype, jnp.floating) and arch.shape == relaxed_shape:
      return arch, ("hard" if hard else "relaxed")
    if arch.shape != (len(NB201_EDGES),) or not jnp.issubdtype(arch.dtype, jnp.integer):
      raise NasjaxError(f"an NB201 architecture is an integer array of shape ({len(NB201_EDGES)},) (one op "
                        f"index per edge) or float mixing weights of shape {relaxed_shape} (edges x ops); "
                        f"got {arch.dtype} {arch.shape}")
    if hard:
      raise NasjaxError("hard=True selects the arg-max of float mixing weights; an int32[6] architecture "
                        "already names one op per edge (call without hard)")
    if not isinstance(arch, jax.core.Tracer):
      NB201Space().check(np.asarray(arch))
    return arch, "discrete"

  @nn.compact
  def __call__(self, x, arch=None, train: bool = False, hard: bool = False):
    arch, mode = self._validate(x, arch, hard)
    genotype = None if self.genotype is None else _check_genotype(self.genotype)
    c = self.channels
    s = batch_norm(train, True, name="stem_bn")(conv(c, (3, 3), name="stem_conv")(x))
    for stage in range(3):
      features = c * 2 ** stage
      if stage:
        s = ResNetReduction(features, self.affine, self.impl, name=f"reduction_{stage}")(s, train)
      for i in range(self.cells_per_stage):
        s = NB201Cell(features, self.affine, genotype, self.impl, name=f"cell_{stage}_{i}")(s, arch, train, mode)
    s = nn.relu(batch_norm(train, True, name="lastact_bn")(s))
    return nn.Dense(self.num_classes, name="classifier")(jnp.mean(s, axis=(1, 2)))

  @nn.nowrap
  def count_params_for(self, arch, *, in_channels: int = 3) -> jax.Array:
    """Parameters of the stand-alone network of ``arch``: the chosen ops only, as the benchmark counts.

    Jittable and vmappable in ``arch`` (int32[6]); divide by 1e6 for the benchmark's "params (MB)".
    ``in_channels``: the input's channels (the benchmark's data sets have 3; the stem convolution has
    ``9 * in_channels * C`` weights, so a 1-channel input such as Fashion-MNIST has fewer).
    """
    if not isinstance(in_channels, (int, np.integer)) or isinstance(in_channels, bool) or in_channels < 1:
      raise NasjaxError(f"count_params_for needs the input's channels as a positive integer; got {in_channels!r}")
    shared, table = _param_table(self.channels, self.cells_per_stage, self.num_classes, self.affine,
                                 int(in_channels))
    arch = jnp.asarray(arch, jnp.int32)
    if arch.shape[-1:] != (len(NB201_EDGES),):
      raise NasjaxError(f"an NB201 architecture has {len(NB201_EDGES)} op indices; got shape {arch.shape}")
    return count_chosen(shared, table, arch)


def _edge_and_op(path) -> tuple[int, str] | None:
  """(edge index in encoding order, op name) of a variable inside a cell edge, else None."""
  names = [getattr(k, "key", None) for k in path]
  edge = next((n for n in names if isinstance(n, str) and n.startswith(_EDGE_PREFIX)), None)
  if edge is None:
    return None
  src, dst = (int(v) for v in edge[len(_EDGE_PREFIX):].split("_to_"))
  op = next(n[len(_OP_PREFIX):] for n in names if isinstance(n, str) and n.startswith(_OP_PREFIX))
  return NB201_EDGES.index((dst, src)), op


@functools.lru_cache(maxsize=32)
def _param_table(channels: int, cells_per_stage: int, num_classes: int, affine: bool, in_channels: int):
  """(parameters outside the cells' ops, int32[6, 5] parameters of op k on edge e summed over cells)."""
  net = NB201Network(channels, cells_per_stage, num_classes, affine, parent=None)
  # Parameter shapes do not depend on the resolution (global pooling); 8x8 survives both reductions.
  shapes = jax.eval_shape(lambda k: net.init(k, jnp.zeros((1, 8, 8, in_channels)), jnp.zeros(6, jnp.int32)),
                          jax.random.key(0))["params"]
  return chosen_op_table(shapes, _edge_and_op, len(NB201_EDGES), NB201_OPS)


def discrete_variables(variables: Any, arch) -> Any:
  """Host side: the variables of ``NB201Network(genotype=arch)`` cut out of a switch network's variables.

  Keeps, on every edge, only the chosen op's variables (the weights it inherits from the supernet).
  """
  ops = _check_genotype(arch)

  def prune(tree, edge: int | None):
    if not isinstance(tree, dict) and not hasattr(tree, "items"):
      return tree
    out = {}
    for name, sub in tree.items():
      if name.startswith(_EDGE_PREFIX):
        src, dst = (int(v) for v in name[len(_EDGE_PREFIX):].split("_to_"))
        sub = prune(sub, NB201_EDGES.index((dst, src)))
      elif edge is not None and name.startswith(_OP_PREFIX):
        if name[len(_OP_PREFIX):] != NB201_OPS[ops[edge]]:
          continue
      else:
        sub = prune(sub, edge)
      # A parameter-free op leaves no entry, as in the stand-alone network's own variables.
      if not hasattr(sub, "items") or len(sub):
        out[name] = sub
    return out

  return prune(variables, None)
