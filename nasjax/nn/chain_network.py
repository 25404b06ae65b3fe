"""The Flax network of a chain-structured macro architecture (``MacroSpace``, ``nas_rl_space``).

Zoph & Le, "Neural Architecture Search with Reinforcement Learning", ICLR 2017, section 3.3: a layer
whose skip connections select several earlier layers reads their outputs concatenated along the depth
(channel) axis; "if input layers to be concatenated have different sizes, we pad the small layers with
zeros so that the concatenated layers have the same sizes"; every layer uses batch norm and ReLU. The
encoding itself is the one of :mod:`nasjax.spaces.macro`: layer ``k`` reads layer ``k - 1`` (the image for
layer 0) concatenated with the layers its skip bits select.

Choices this module makes where the space leaves them open (each one is what the morphisms of
:mod:`nasjax.estimators.morphism` need to be exactly function preserving):

* ``conv``: Conv(kernel_h x kernel_w, strides (stride_h, stride_w), SAME, no bias) -> BatchNorm -> ReLU. Post-activation
  (NAS-RL's conv-BN-ReLU) rather than DARTS' ReLU-Conv-BN, so the first layer does not rectify the
  normalised image and every layer output is non-negative, which is what makes an identity-initialised
  conv (Net2DeeperNet) an exact identity.
* ``pool``: max pooling (kernel_h x kernel_w, strides (stride_h, stride_w), SAME); channels pass through.
  A space with one stride field (no ``split_strides``) uses it for both.
* ``dense``: global average pooling, a fully connected layer with bias, ReLU; the output is kept as a
  ``[B, 1, 1, units]`` map so that any layer type may follow. Averaging rather than flattening keeps the
  parameter count independent of the resolution.
* ``identity``: passes its (concatenated) input on.
* The inputs of a layer are the sorted set ``{k - 1} | skips``: the skip bit "layer k from layer k-1"
  repeats the chain edge, so it adds nothing (two encodings name one network). Smaller maps are zero
  padded, centred, to the largest height and width among the inputs, as NAS-RL describes.
* The classifier: global average pooling of the last layer's output and a dense layer. NAS-RL
  concatenates every layer output that nothing reads; in this chain encoding that is the last layer alone.

Shapes are planned on the host by :func:`plan_network` (static Python), so the module is an ordinary Flax
module that can be jitted, exported and counted with :mod:`nasjax.nn.count`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.ops import batch_norm
from nasjax.spaces.macro import MacroSpace

IMAGE = -1  # source id of the network input in LayerPlan.sources


@dataclasses.dataclass(frozen=True)
class LayerPlan:
  """Static description of one layer of a chain network (host side).

  ``stride`` is (height, width), also where the space has one stride field; ``sources`` are the layers
  whose outputs are concatenated (``IMAGE`` for the network input), in order; ``nonnegative`` says whether
  every output value is >= 0 (true after a ReLU, kept by max pooling and identity).
  """
  index: int
  type: str
  kernel: tuple[int, int] | None
  filters: int | None
  stride: tuple[int, int] | None
  sources: tuple[int, ...]
  in_hw: tuple[int, int]
  in_channels: int
  out_hw: tuple[int, int]
  out_channels: int
  nonnegative: bool


def _check_space(space: Any) -> MacroSpace:
  if not isinstance(space, MacroSpace):
    raise NasjaxError(f"chain networks are built from a MacroSpace (macro, nas_rl); got "
                      f"{getattr(space, 'name', type(space).__name__)!r}")
  return space


def _check_input_shape(input_shape: Any) -> tuple[int, int, int]:
  try:
    shape = tuple(int(d) for d in input_shape)
    ok = len(shape) == 3 and all(d > 0 for d in shape) and all(
        float(d) == float(e) for d, e in zip(shape, input_shape))
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise NasjaxError(f"input_shape must be (height, width, channels) of positive integers; got "
                      f"{input_shape!r}")
  return shape  # type: ignore[return-value]


def plan_network(space: MacroSpace, arch: Any, input_shape: Any) -> tuple[LayerPlan, ...]:
  """Per-layer shapes of the network of ``arch`` on ``(H, W, C)`` images; validates everything."""
  space = _check_space(space)
  a = space.check(arch)
  return _plan_cached(space, tuple(int(v) for v in a), _check_input_shape(input_shape))


@functools.lru_cache(maxsize=1024)
def _plan_cached(space: MacroSpace, arch: tuple[int, ...],
                 input_shape: tuple[int, int, int]) -> tuple[LayerPlan, ...]:
  h, w, c = input_shape
  plans: list[LayerPlan] = []
  for k, layer in enumerate(space.describe(np.asarray(arch, np.int32))):
    sources = (IMAGE,) if k == 0 else tuple(sorted({k - 1, *layer["skips"]}))
    hws = [(h, w) if s == IMAGE else plans[s].out_hw for s in sources]
    in_hw = (max(x[0] for x in hws), max(x[1] for x in hws))
    in_channels = sum(c if s == IMAGE else plans[s].out_channels for s in sources)
    inputs_nonneg = all(s != IMAGE and plans[s].nonnegative for s in sources)
    t = layer["type"]
    stride = layer["stride"]
    if isinstance(stride, int):
      stride = (stride, stride)
    if t in ("conv", "pool"):
      out_hw = (-(-in_hw[0] // stride[0]), -(-in_hw[1] // stride[1]))
      out_channels = layer["filters"] if t == "conv" else in_channels
      nonneg = True if t == "conv" else inputs_nonneg
    elif t == "dense":
      out_hw, out_channels, nonneg = (1, 1), layer["filters"], True
    else:
      out_hw, out_channels, nonneg = in_hw, in_channels, inputs_nonneg
    plans.append(LayerPlan(k, t, layer["kernel"], layer["filters"], stride, sources, in_hw,
                           in_channels, out_hw, out_channels, nonneg))
  return tuple(plans)


def pad_to(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Zero pads ``x`` ([B, h, w, C]) centred to height and width ``hw`` (NAS-RL's size matching)."""
  dh, dw = hw[0] - x.shape[1], hw[1] - x.shape[2]
  if dh == 0 and dw == 0:
    return x
  return jnp.pad(x, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2), (0, 0)))


def layer_names(plan: LayerPlan) -> dict[str, str]:
  """Flax submodule names of a layer's parameters: ``{"conv", "bn"}`` or ``{"dense"}`` (or empty)."""
  k = plan.index
  if plan.type == "conv":
    return {"conv": f"layer{k}_conv", "bn": f"layer{k}_bn"}
  if plan.type == "dense":
    return {"dense": f"layer{k}_dense"}
  return {}


CLASSIFIER = "classifier"


class ChainNetwork(nn.Module):
  """``ChainNetwork(space, arch, num_classes, input_shape).apply(variables, x, train=False) -> logits``.

  ``arch`` is the space's encoding (any int sequence; stored as a tuple so the module is hashable);
  ``input_shape`` is ``(H, W, C)`` of one image, and ``x`` must be ``[B, H, W, C]``.
  """
  space: MacroSpace
  arch: tuple[int, ...]
  num_classes: int
  input_shape: tuple[int, int, int]

  @property
  def plan(self) -> tuple[LayerPlan, ...]:
    return plan_network(self.space, self.arch, self.input_shape)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
      raise NasjaxError(f"num_classes must be a positive integer; got {self.num_classes!r}")
    plans = self.plan
    want = tuple(self.input_shape)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
      raise NasjaxError(f"ChainNetwork expects images of shape [batch, {want[0]}, {want[1]}, {want[2]}] "
                        f"(input_shape={want}); got {tuple(x.shape)}")
    outputs: list[jax.Array] = []
    for p in plans:
      parts = [x if s == IMAGE else outputs[s] for s in p.sources]
      h = jnp.concatenate([pad_to(t, p.in_hw) for t in parts], axis=-1)
      names = layer_names(p)
      if p.type == "conv":
        h = nn.Conv(p.filters, p.kernel, p.stride, padding="SAME", use_bias=False,
                    name=names["conv"])(h)
        h = nn.relu(batch_norm(train, True, names["bn"])(h))
      elif p.type == "pool":
        # By keyword: jax2onnx's ONNX conversion replaces flax's max_pool with a keyword-only function.
        h = nn.max_pool(h, window_shape=p.kernel, strides=p.stride, padding="SAME")
      elif p.type == "dense":
        h = nn.relu(nn.Dense(p.filters, name=names["dense"])(jnp.mean(h, axis=(1, 2))))
        h = h[:, None, None, :]
      outputs.append(h)
    return nn.Dense(self.num_classes, name=CLASSIFIER)(jnp.mean(outputs[-1], axis=(1, 2)))


def chain_network(space: MacroSpace, arch: Any, num_classes: int, input_shape: Any) -> ChainNetwork:
  """Validates ``arch`` and ``input_shape`` and builds the module (errors come here, not at apply)."""
  plan_network(space, arch, input_shape)
  return ChainNetwork(space, tuple(int(v) for v in np.asarray(arch).reshape(-1)), num_classes,
                      _check_input_shape(input_shape))


def init_variables(network: ChainNetwork, key: jax.Array) -> dict:
  """``{"params", "batch_stats"}`` of ``network`` (a 2-image dummy batch)."""
  return network.init(key, jnp.zeros((2,) + tuple(network.input_shape), jnp.float32), train=False)


def chain_model_fn(network: ChainNetwork):
  """The ``model_fn`` contract of :mod:`nasjax.training` for a chain network (no aux head, no drop-path)."""
  from nasjax.training.model import plain_model_fn  # the engine sits above nn/
  return plain_model_fn(network)


def plan_macs(plans: tuple[LayerPlan, ...], num_classes: int) -> int:
  """Multiply-accumulates of one image from the plan alone (convs, dense layers and the classifier), the
  count :func:`nasjax.nn.count.count_macs` gives for a batch of one, without tracing."""
  total = plans[-1].out_channels * num_classes
  for p in plans:
    if p.type == "conv":
      total += math.prod(p.out_hw) * p.filters * p.in_channels * p.kernel[0] * p.kernel[1]
    elif p.type == "dense":
      total += p.in_channels * p.filters
  return total
