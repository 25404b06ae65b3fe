"""The ENAS macro network, with the architecture as data: the shared network of the macro search space.

Pham, Guan, Zoph, Le & Dean, "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018,
section 2.3 (designing convolutional networks) and the authors' macro child (``general_child.py``):

* stem: a 3x3 convolution to C channels and BN;
* L layers (:class:`nasjax.spaces.EnasMacroSpace`, L = 12 in the paper); layer ``k`` applies its op to
  layer ``k - 1``'s output (the stem's for layer 0). Each of the 6 ops is written as the authors' code
  writes it: a 1x1 convolution, BN and ReLU to C channels, then a k x k convolution (or a depthwise k x k
  and a pointwise convolution for the separable ops), BN and ReLU; the pools are that 1x1 block followed by
  a 3x3 pool of stride 1. Layer ``k > 0`` adds the outputs of the layers its skip bits select to the op's
  output and normalises the sum with a BN of its own, as the authors' shared network does (their stand-alone
  child concatenates them and applies a 1x1 convolution instead; ``fixed_arch`` children here sum, so a
  child's parameters are a subset of the shared network's, named alike);
* reduction after layers ``L // 3 - 1`` and ``2 * (L // 3) - 1`` (3 and 7 for 12 layers; none below 3
  layers): every layer output so far is halved in resolution by its own factorized reduction (two offset
  stride-2 1x1 convolutions, concatenated, BN), so a skip across a reduction reads a map of the same size.
  The shared network of the search keeps C channels throughout; the authors' stand-alone child doubles
  them at each reduction (``double_channels=True``);
* global average pooling, dropout (the search uses keep probability 0.9: ``dropout_rate=0.1``) and a
  linear classifier without bias.

Skip bits follow the space's encoding: bit ``(k, j)`` adds layer ``j``'s output, ``j < k``, so a skip from
layer ``k - 1`` is a residual around the op. (The authors' code indexes the ``k`` bits of layer ``k`` over
[stem, layer 0, ..., layer k - 2] instead; the space's notation, ``conv_3x3<-0``, names layers.)

The architecture is an argument of ``__call__`` (``int32[D]`` in ``EnasMacroSpace`` encoding, possibly a
tracer), so one compiled program serves every architecture. Each layer computes only its chosen op
(``lax.switch``), so the gradient of a training step is exactly zero for the other ops' parameters; under
``jax.vmap`` over architectures the switch becomes a select over all ops, which is slower but the same
function. Variables are ``{"params", "batch_stats"}``, as the weight-sharing estimator expects.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.conv import resolve_conv_impl
from nasjax.nn.count import chosen_op_table, count_chosen
from nasjax.nn.ops import (DepthwiseConv, FactorizedReduce, Impl, Pointwise, Pool, batch_norm, conv, op_spec,
                           switch_ops)
from nasjax.spaces.enas_macro import ENAS_MACRO_OPS, EnasMacroSpace

_LAYER_PREFIX = "layer_"
_OP_PREFIX = "ops_"


def pool_layers(num_layers: int) -> tuple[int, ...]:
  """The layers after which the network halves its resolution: ``L // 3 - 1`` and ``2 * (L // 3) - 1``."""
  distance = num_layers // 3
  return () if distance == 0 else (distance - 1, 2 * distance - 1)


class EnasMacroOp(nn.Module):
  """One candidate op of a macro layer: 1x1 conv-BN-ReLU, then the op's convolution-BN-ReLU or pool."""
  op: str
  channels: int
  impl: Impl = Impl(conv="xla")

  @nn.compact
  def __call__(self, x, train: bool):
    spec = op_spec(self.op)
    y = nn.relu(batch_norm(train, True, name="in_bn")(Pointwise(self.channels, name="in_conv")(x)))
    if spec.is_pool:
      return Pool("max" if spec.kind == "max_pool" else "avg", spec.kernel, 1, self.impl.pool)(y)
    if spec.kind == "sep_conv":
      y = DepthwiseConv(spec.kernel, impl=self.impl, name="depthwise")(y)
      y = Pointwise(self.channels, name="pointwise")(y)
    elif spec.kind == "conv":
      y = conv(self.channels, (spec.kernel, spec.kernel), name="conv", impl=resolve_conv_impl(self.impl.conv))(y)
    else:
      raise NasjaxError(f"the ENAS macro layer has no form for op {self.op!r} (kind {spec.kind})")
    return nn.relu(batch_norm(train, True, name="out_bn")(y))


class EnasMacroLayer(nn.Module):
  """All candidate ops of one layer; ``choice`` (an int, possibly a tracer) says which one runs."""
  candidates: tuple[str, ...]
  channels: int
  impl: Impl = Impl(conv="xla")

  def setup(self):
    # A dict attribute names the submodules ops_<op name>, which count_params_for reads back.
    self.ops = {name: EnasMacroOp(name, self.channels, self.impl) for name in self.candidates}

  def __call__(self, x, choice, train: bool):
    if len(self.candidates) == 1:  # a stand-alone child's layer: its one op, no switch
      return self.ops[self.candidates[0]](x, train)
    branches = [lambda mdl, x, name=name: mdl.ops[name](x, train) for name in self.candidates]
    return switch_ops(self, choice, branches, x)


class EnasMacroNetwork(nn.Module):
  """The ENAS macro network of an ``EnasMacroSpace`` architecture (see the module docstring).

  Attributes:
    num_layers: L, the space's layer count (:meth:`for_space` takes it from the space).
    channels: C, the stem's and the layers' channels (36 in the paper's macro search); even when the
      network reduces (L >= 3).
    num_classes: classifier outputs.
    double_channels: double the channels at each reduction (the authors' stand-alone child); False keeps
      C throughout (their shared network during the search).
    dropout_rate: dropout before the classifier, applied when training with a ``"dropout"`` rng (the
      BN recalibration of the weight-sharing estimator runs in training mode without one).
    impl: how convolutions and pools are written (:class:`nasjax.nn.ops.Impl`).
    fixed_arch: a stand-alone child's architecture (the space's encoding as a tuple of ints): each layer
      then owns only its chosen op's parameters (named as in the shared network, ``layer_k/ops_<op>``),
      the skips are fixed, and ``__call__`` takes no ``arch``. None: the shared network, every op's
      parameters, the architecture an argument.

  Call as ``apply(variables, x, arch, train=...)`` with ``arch`` an integer array of shape
  ``(space.num_decisions,)`` (``apply(variables, x, train=...)`` with ``fixed_arch``); returns the logits.
  """
  num_layers: int = 12
  channels: int = 36
  num_classes: int = 10
  double_channels: bool = False
  dropout_rate: float = 0.0
  impl: Impl = Impl(conv="xla")
  fixed_arch: tuple[int, ...] | None = None

  @classmethod
  def for_space(cls, space: Any, *, channels: int = 36, num_classes: int = 10, **kwargs) -> EnasMacroNetwork:
    """The network of ``space`` (an ``EnasMacroSpace``) at ``channels`` channels and ``num_classes`` outputs."""
    if not isinstance(space, EnasMacroSpace):
      raise NasjaxError(f"EnasMacroNetwork is built for the enas_macro space; got "
                        f"{getattr(space, 'name', type(space).__name__)!r}")
    return cls(num_layers=space.num_layers, channels=channels, num_classes=num_classes, **kwargs)

  @nn.nowrap
  def space(self) -> EnasMacroSpace:
    return EnasMacroSpace(self.num_layers)

  @nn.nowrap
  def _check_sizes(self):
    for name in ("num_layers", "channels", "num_classes"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise NasjaxError(f"EnasMacroNetwork needs a positive integer {name}; got {value!r}")
    if pool_layers(self.num_layers) and self.channels % 2:
      raise NasjaxError(f"EnasMacroNetwork with {self.num_layers} layers reduces its resolution and needs an "
                        f"even channel count (factorized reductions); got channels={self.channels}")
    if not 0.0 <= float(self.dropout_rate) < 1.0:
      raise NasjaxError(f"dropout_rate must lie in [0, 1); got {self.dropout_rate!r}")

  @nn.nowrap
  def check_arch(self, arch) -> jax.Array:
    """``arch`` as int32[D]; a wrong shape or dtype (or, when concrete, a value) is a NasjaxError."""
    space = self.space()
    arch = jnp.asarray(arch)
    if arch.shape != (space.num_decisions,) or not jnp.issubdtype(arch.dtype, jnp.integer):
      raise NasjaxError(f"an enas_macro architecture of {self.num_layers} layers is an integer array of shape "
                        f"({space.num_decisions},) ({self.num_layers} op indices, then "
                        f"{space.num_skip_bits} skip bits); got {arch.dtype} {arch.shape}")
    if not isinstance(arch, jax.core.Tracer):
      space.check(np.asarray(arch))
    return arch.astype(jnp.int32)

  @nn.compact
  def __call__(self, x, arch=None, train: bool = False):
    self._check_sizes()
    if x.ndim != 4:
      raise NasjaxError(f"EnasMacroNetwork input must be NHWC (4-D), got shape {x.shape}")
    if (arch is None) == (self.fixed_arch is None):
      raise NasjaxError("EnasMacroNetwork takes the architecture either as fixed_arch (a stand-alone child) or "
                        "as the argument arch (the shared network), exactly one of them")
    fixed = self.fixed_arch is not None
    space = self.space()
    if fixed:  # the child's structure is plain Python, read on the host
      layers = space.describe(np.asarray(self.fixed_arch, np.int32))  # checks shape and values
      ops = [ENAS_MACRO_OPS.index(layer["op"]) for layer in layers]
      skips = np.zeros((self.num_layers, self.num_layers), bool)
      for k, layer in enumerate(layers):
        skips[k, layer["skips"]] = True
    else:
      arch = self.check_arch(arch)
      ops, skips = space.layer_ops(arch), space.skip_matrix(arch)
    reduce_after = pool_layers(self.num_layers)
    c = self.channels
    h = batch_norm(train, True, name="stem_bn")(conv(c, (3, 3), name="stem_conv")(x))
    outputs: list[jax.Array] = []
    for k in range(self.num_layers):
      layer = EnasMacroLayer((ENAS_MACRO_OPS[ops[k]],) if fixed else ENAS_MACRO_OPS, c, self.impl,
                             name=f"{_LAYER_PREFIX}{k}")
      y = layer(h, 0 if fixed else ops[k], train)
      if k and fixed:
        y = batch_norm(train, True, name=f"skip_bn_{k}")(y + sum(outputs[j] for j in range(k) if skips[k, j]))
      elif k:
        # where, not a product with the bit: an unselected source contributes an exact zero, NaN or not.
        y = y + sum(jnp.where(skips[k, j] > 0, outputs[j], 0.0) for j in range(k))
        y = batch_norm(train, True, name=f"skip_bn_{k}")(y)
      outputs.append(y)
      if k in reduce_after:
        c = 2 * c if self.double_channels else c
        outputs = [FactorizedReduce(c, relu=False, name=f"reduce_{k}_from_{j}")(o, train)
                   for j, o in enumerate(outputs)]
      h = outputs[-1]
    h = jnp.mean(h, axis=(1, 2))
    if self.dropout_rate > 0:
      h = nn.Dropout(self.dropout_rate, deterministic=not (train and self.has_rng("dropout")))(h)
    return nn.Dense(self.num_classes, use_bias=False, name="classifier")(h)

  @nn.nowrap
  def count_params_for(self, arch, *, in_channels: int) -> jax.Array:
    """Parameters of the network of ``arch`` with only its chosen ops (jittable and vmappable in ``arch``):
    the stem, the skip BNs, the reductions and the classifier plus each layer's chosen op.

    ``in_channels`` is the input's channel count (1 for Fashion-MNIST, 3 for CIFAR-10): the stem's
    convolution has ``9 * in_channels * C`` weights, so it is asked for rather than assumed.
    """
    if not isinstance(in_channels, (int, np.integer)) or isinstance(in_channels, bool) or in_channels < 1:
      raise NasjaxError(f"count_params_for needs the input's channels as a positive integer; got {in_channels!r}")
    space = self.space()
    shared, table = _param_table(self.num_layers, self.channels, self.num_classes, self.double_channels,
                                 int(in_channels))
    arch = jnp.asarray(arch, jnp.int32)
    if arch.shape[-1:] != (space.num_decisions,):
      raise NasjaxError(f"an enas_macro architecture of {self.num_layers} layers has {space.num_decisions} "
                        f"decisions; got shape {arch.shape}")
    return count_chosen(shared, table, arch[..., :self.num_layers])


def _layer_and_op(path) -> tuple[int, str] | None:
  names = [getattr(k, "key", None) for k in path]
  layer = next((n for n in names if isinstance(n, str) and n.startswith(_LAYER_PREFIX)), None)
  if layer is None:
    return None
  op = next(n[len(_OP_PREFIX):] for n in names if isinstance(n, str) and n.startswith(_OP_PREFIX))
  return int(layer[len(_LAYER_PREFIX):]), op


@functools.lru_cache(maxsize=32)
def _param_table(num_layers: int, channels: int, num_classes: int, double_channels: bool, in_channels: int):
  """(parameters outside the layers' ops, int32[L, 6] parameters of op o in layer k)."""
  net = EnasMacroNetwork(num_layers, channels, num_classes, double_channels, parent=None)
  space = net.space()
  # Parameter shapes do not depend on the resolution (global pooling); 8x8 survives both reductions.
  x = jnp.zeros((1, 8, 8, in_channels))
  shapes = jax.eval_shape(lambda k: net.init(k, x, jnp.zeros(space.num_decisions, jnp.int32)),
                          jax.random.key(0))["params"]
  return chosen_op_table(shapes, _layer_and_op, num_layers, ENAS_MACRO_OPS)
