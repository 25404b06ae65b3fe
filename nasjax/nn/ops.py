"""Candidate operations of cell search spaces, one registry entry per op.

The op set is the union of DARTS (Liu et al. 2019, "DARTS: Differentiable Architecture Search"), NASNet
(Zoph et al. 2018, "Learning Transferable Architectures for Scalable Image Recognition"), ENAS (Pham et al.
2018) and NAS-Bench-201 (Dong & Yang 2020). Each op is a Flax module built by a factory from an
:class:`OpConfig`; a new op is one ``@register_op`` entry.

Depthwise convolutions are the hot spot of these search spaces. XLA:CPU runs a grouped convolution
(``feature_group_count=C``) 4-10x slower than a dense convolution with a block-diagonal kernel (C times
the multiply-adds) or a sum of shifted slices. In the scanned edges of :mod:`nasjax.nn.supernet` the
shifted-slice form has its own gradient (``_shift_depthwise``) and is the fastest on CPU; elsewhere
(plain autodiff) the dense form wins at <= 16 channels and the shifted slices above. On a GPU the
grouped form's backward pass is slow when dilated (cuDNN splits it into many kernels), so the shifted
slices are used there too (see :func:`resolve_dw_impl`). One :class:`Impl` setting picks the
formulation of depthwise convolutions, dense convolutions and pools for a whole network (``"auto"``
decides per backend, channel count and context); every choice computes the same function with the same
parameters. It is an explicit argument: nothing here reads the environment.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nasjax.errors import NasjaxError
from nasjax.nn.conv import CONV_IMPLS, conv2d, resolve_conv_impl

DEPTHWISE_IMPLS = ("auto", "grouped", "dense", "shift")
POOL_IMPLS = ("shift", "window")
# PyTorch's BatchNorm momentum 0.1 is Flax's 0.9 (Flax weights the old running value).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class Impl:
  """How a network's ops are written for XLA: the one implementation setting, given once per network.

  Every choice computes the same function of the same parameters; only the XLA program differs.

  Attributes:
    depthwise: ``"auto"``, ``"grouped"``, ``"dense"`` or ``"shift"`` (:func:`resolve_dw_impl`).
    conv: dense convolutions, ``"auto"``, ``"xla"`` or ``"canonical"`` (:mod:`nasjax.nn.conv`). What
      ``"auto"`` means depends on the network: :class:`nasjax.nn.network.Network` uses the canonical
      form on CPU, :class:`nasjax.nn.supernet.Supernet` inside its scanned edges on CPU, a bare op
      (:func:`make_op`) on CPU.
    pool: ``"auto"``, ``"shift"`` or ``"window"`` (:func:`resolve_pool_impl`).
  """
  depthwise: str = "auto"
  conv: str = "auto"
  pool: str = "auto"

  def __post_init__(self):
    for field, accepted in (("depthwise", DEPTHWISE_IMPLS), ("conv", CONV_IMPLS), ("pool", ("auto",) + POOL_IMPLS)):
      value = getattr(self, field)
      if value not in accepted:
        raise NasjaxError(f"unknown {field} implementation {value!r}; accepted: {', '.join(accepted)}")


# XLA's own primitives throughout (grouped depthwise convolutions, plain autodiff): what the jaxpr
# counters of parameters and multiply-adds read (shifted slices would hide a depthwise convolution's MACs).
XLA_IMPL = Impl(depthwise="grouped", conv="xla")


@dataclasses.dataclass(frozen=True)
class OpConfig:
  """Static description of one op slot: every factory receives it."""
  channels: int
  stride: int = 1
  affine: bool = True
  # A bare op differentiates with XLA's convolutions unless told otherwise; the networks pass their own.
  impl: Impl = Impl(conv="xla")


OpFactory = Callable[[OpConfig], nn.Module]
OP_KINDS = ("zero", "identity", "max_pool", "avg_pool", "sep_conv", "dil_conv", "conv", "factorized_conv",
            "other")


@dataclasses.dataclass(frozen=True)
class OpSpec:
  """A registered op: its factory and what the library needs to know about it (never read off its name).

  Attributes:
    name: the registry key (``sep_conv_3x3``).
    factory: ``OpConfig -> nn.Module``; the module is called as ``module(x, train)``.
    kind: one of :data:`OP_KINDS` (``"other"`` for ops registered from outside nasjax).
    kernel: kernel or window size (None for ops without one).
    dilation: the depthwise convolution's dilation (``dil_conv``), else 1.
    parameter_free: no parameters at stride 1 (``none``, ``skip_connect``, pools); at stride 2
      ``skip_connect`` is a :class:`FactorizedReduce`, which has some.
  """
  name: str
  factory: OpFactory
  kind: str = "other"
  kernel: int | None = None
  dilation: int = 1
  parameter_free: bool = False

  @property
  def is_pool(self) -> bool:
    """Max or average pooling: the DARTS supernet follows these with a BN without affine parameters."""
    return self.kind in ("max_pool", "avg_pool")

  @property
  def is_zero(self) -> bool:
    """The ``none`` op (a zero tensor): relaxed mixtures skip computing it."""
    return self.kind == "zero"

  @property
  def is_identity(self) -> bool:
    """``skip_connect``: the identity at stride 1 (drop-path leaves it alone)."""
    return self.kind == "identity"


OPS: dict[str, OpSpec] = {}


def register_op(name: str, kind: str = "other", kernel: int | None = None, dilation: int = 1,
                parameter_free: bool = False) -> Callable[[OpFactory], OpFactory]:
  """Adds a factory ``OpConfig -> nn.Module`` to :data:`OPS` under ``name``, with its metadata."""
  if kind not in OP_KINDS:
    raise NasjaxError(f"unknown op kind {kind!r}; accepted: {', '.join(OP_KINDS)}")

  def decorator(factory: OpFactory) -> OpFactory:
    if name in OPS:
      raise ValueError(f"The op {name!r} is already registered.")
    OPS[name] = OpSpec(name, factory, kind, kernel, dilation, parameter_free)
    return factory
  return decorator


def op_spec(name: str) -> OpSpec:
  """The registry entry of ``name``; an unknown name is a :class:`NasjaxError` listing the known ones."""
  if name not in OPS:
    raise NasjaxError(f"unknown op {name!r}; registered ops: {', '.join(sorted(OPS))}")
  return OPS[name]


def make_op(name: str, config: OpConfig) -> nn.Module:
  return op_spec(name).factory(config)


def switch_ops(module: nn.Module, index, branches: Sequence[Callable], x):
  """``branches[index](module, x)`` by ``nn.switch``: only the chosen candidate op runs.

  The switch of the networks that take the architecture as data (one program for every architecture,
  ``index`` possibly a tracer); under ``jax.vmap`` over ``index`` it becomes a select over all branches.
  ``branches`` are ``(module, x) -> y`` with one output shape, as ``nn.switch`` takes them.
  """
  if module.is_initializing():
    # nn.switch only traces its branches: every candidate runs here to own its variables from the start,
    # and selecting the chosen output from them keeps the init program to one copy of each op.
    return jnp.stack([branch(module, x) for branch in branches])[index]
  return nn.switch(index, branches, module, x)


def resolve_dw_impl(impl: str, channels: int, backend: str | None = None, custom_gradient: bool = False) -> str:
  """Picks the depthwise formulation XLA runs fastest on ``backend`` (see module docstring).

  GPU (one H100, jax 0.11.2, 2026-11-27): the DARTS search supernet's weight step (C=16, 8 cells, batch
  64) took 0.693 s with grouped convolutions, 0.372 s with block-diagonal dense ones and 0.277 s with
  shifted slices (PyTorch's reference: 0.435 s). A profile (``supernet_step.py --profile``) of the grouped
  step ranked the backward convolutions of the two dilated ops first, cuDNN running each as ~16 kernels
  (one per channel group). Alone, forward + backward at 32x32x16 with dilation 2 took 3.1 ms grouped,
  1.6 ms dense, 0.26 ms shifted (``benchmarks/depthwise.py``). TPUs and other backends keep XLA's grouped
  convolution (unmeasured).
  """
  if impl not in DEPTHWISE_IMPLS:
    raise NasjaxError(f"unknown depthwise implementation {impl!r}; accepted: {', '.join(DEPTHWISE_IMPLS)}")
  if impl != "auto":
    return impl
  backend = backend or jax.default_backend()
  if backend in ("gpu", "cuda", "rocm"):
    return "shift"
  if backend != "cpu":
    return "grouped"
  if custom_gradient:
    return "shift"  # _shift_depthwise: its own gradient beats both forms under autodiff
  return "dense" if channels <= 16 else "shift"


def resolve_pool_impl(impl: str = "auto", backend: str | None = None) -> str:
  """``"auto"``: shifted slices on CPU (see :func:`pool`), XLA's ``reduce_window`` elsewhere.

  ``"shift"`` or ``"window"`` force one form (XLA's select-and-scatter, the gradient of ``reduce_window``
  max pooling, is slow on some backends), so benchmarks can compare both (``Impl(pool=...)``).
  """
  if impl != "auto":
    if impl not in POOL_IMPLS:
      raise NasjaxError(f"unknown pool implementation {impl!r}; accepted: auto, {', '.join(POOL_IMPLS)}")
    return impl
  return "shift" if (backend or jax.default_backend()) == "cpu" else "window"


def _pad_pairs(kernel: Sequence[int], dilation: int) -> tuple[tuple[int, int], ...]:
  # Symmetric "same" padding as in the papers' PyTorch code (k // 2 * dilation), also for stride 2,
  # where XLA's "SAME" would pad asymmetrically.
  return tuple((dilation * (k - 1) // 2,) * 2 for k in kernel)


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, impl: str,
                   conv_impl: str = "xla") -> jax.Array:
  """Depthwise 2-D convolution of NHWC ``x`` with an HWIO kernel of shape (kh, kw, 1, C)."""
  kh, kw, _, channels = kernel.shape
  pads = _pad_pairs((kh, kw), dilation)
  if impl == "shift":
    if kh != kw:
      raise NasjaxError(f"shift depthwise convolution needs a square kernel, got {kh}x{kw}")
    if conv_impl == "canonical":
      return _shift_depthwise(x, kernel, stride, dilation)
    return _shift_depthwise_forward(x, kernel, stride, dilation)
  if impl == "dense":
    # Block-diagonal dense kernel: C times the FLOPs, but XLA:CPU's dense convolution is far faster
    # than its grouped one at the small channel counts of search supernets.
    kernel = kernel[:, :, 0, :, None] * jnp.eye(channels, dtype=kernel.dtype)
    return conv2d(x, kernel, stride, pads, dilation, conv_impl)
  if impl != "grouped":
    raise NasjaxError(f"unknown depthwise implementation {impl!r}; accepted: grouped, dense, shift")
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), pads, rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)


def _weighted_window_sum(padded, kernel, stride, dilation):
  """Sum over the kernel's taps of each strided view of ``padded`` times that tap's per-channel weight.

  Written in ``lax`` primitives: a supernet traces this for every depthwise convolution of every edge kind
  (25 taps for a 5x5), and ``jnp`` indexing and broadcasting cost several times the primitives' tracing.
  """
  k, channels = kernel.shape[0], kernel.shape[-1]
  dtype = jnp.result_type(padded, kernel)
  padded = padded.astype(dtype)
  taps = lax.reshape(kernel.astype(dtype), (k * k, channels))
  out = None
  for i, j, view in _shifted_windows(padded, k, stride, dilation):
    weight = lax.broadcast_in_dim(lax.index_in_dim(taps, i * k + j, keepdims=False), view.shape, (3,))
    term = lax.mul(view, weight)
    out = term if out is None else lax.add(out, term)
  return out


def _shift_depthwise_forward(x, kernel, stride, dilation):
  p = dilation * (kernel.shape[0] - 1) // 2
  return _weighted_window_sum(jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))), kernel, stride, dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _shift_depthwise(x, kernel, stride, dilation):
  """Depthwise convolution as a sum of shifted slices, with a gradient XLA:CPU runs fast in loops.

  Measured on this 2-core CPU (batch 64, 32x32x16, 3x3): forward 1.0 ms as shifted slices vs 3.5 ms as
  a block-diagonal dense convolution (5x5 dilated: 1.3 vs 17.4 ms; 8x8x64: 0.4 vs 4.7 ms). Autodiff of
  the slices emits one reduction and one pad per tap; here the input gradient is the same shifted-slice
  sum over the (dilated) output gradient with the flipped kernel. The kernel gradient is one reduction
  per tap, run as a loop over the taps (:func:`_tap_loop_kernel_gradient`).
  Ordinary JAX code, so forward-over-reverse works.
  """
  return _shift_depthwise_forward(x, kernel, stride, dilation)


def _shift_depthwise_fwd(x, kernel, stride, dilation):
  return _shift_depthwise_forward(x, kernel, stride, dilation), (x, kernel)


def _shift_depthwise_bwd(stride, dilation, residuals, g):
  x, kernel = residuals
  k, channels = kernel.shape[0], kernel.shape[-1]
  p = dilation * (k - 1) // 2
  height, width = x.shape[1:3]
  # Input gradient: the output gradient on the input grid (stride - 1 zeros between rows/columns),
  # padded so that a stride-1 correlation with the flipped kernel lands on x's pixels.
  reach = dilation * (k - 1)
  config = [(0, 0, 0)]
  for size, out_size in ((height, g.shape[1]), (width, g.shape[2])):
    low = reach - p
    config.append((low, size + reach - ((out_size - 1) * stride + 1) - low, stride - 1))
  config.append((0, 0, 0))
  g_grid = lax.pad(g, jnp.zeros((), g.dtype), config)
  dx = _weighted_window_sum(g_grid, kernel[::-1, ::-1], 1, dilation)
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  dk = _tap_loop_kernel_gradient(xp, g, k, stride, dilation).reshape(k, k, 1, channels)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_shift_depthwise.defvjp(_shift_depthwise_fwd, _shift_depthwise_bwd)


def _tap_loop_kernel_gradient(padded, g, k, stride, dilation):
  """The k*k kernel-gradient taps of a depthwise convolution, one ``fori_loop`` step per tap.

  XLA compiles each distinct fused kernel separately and reuses identical ones, so a loop body that
  picks its tap by ``dynamic_slice`` is one reduction kernel per (shape, stride, dilation), where
  unrolled taps are k*k kernels that differ only in their offsets. In the scanned DARTS search
  supernet's weight step (16 channels, 8 cells, batch 64, this 2-core CPU, three alternating runs each)
  XLA's compile went 42.7-44.6 s -> 33.2-36.1 s and the step 11.6-13.6 s -> 7.8-10.4 s; the unrolled
  per-tap form had also needed a 16x redundant dense convolution for 5x5 kernels at <= 16 channels to
  run at speed, which the loop does not. The discrete DARTS_V2 network's training step is unchanged
  (0.53-0.62 vs 0.63-0.66 s; compile 18.7-20.9 vs 20.1-21.0 s).
  """
  batch, out_h, out_w, channels = g.shape
  span = ((out_h - 1) * stride + 1, (out_w - 1) * stride + 1)

  def tap(t, dk):
    row, col = t // k, t % k
    view = lax.dynamic_slice(padded, (0, row * dilation, col * dilation, 0), (batch, *span, channels))
    if stride > 1:
      view = lax.slice(view, (0, 0, 0, 0), view.shape, (1, stride, stride, 1))
    return lax.dynamic_update_index_in_dim(dk, jnp.sum(view * g, axis=(0, 1, 2)), t, 0)

  return lax.fori_loop(0, k * k, tap, jnp.zeros((k * k, channels), jnp.result_type(padded, g)))


def _shifted_windows(x: jax.Array, window: int, stride: int, dilation: int = 1):
  """Yields the k*k strided views of an already padded NHWC tensor that a window op combines."""
  out_h = (x.shape[1] - dilation * (window - 1) - 1) // stride + 1
  out_w = (x.shape[2] - dilation * (window - 1) - 1) // stride + 1
  for i in range(window):
    for j in range(window):
      yield i, j, lax.slice(
          x, (0, i * dilation, j * dilation, 0),
          (x.shape[0], i * dilation + (out_h - 1) * stride + 1, j * dilation + (out_w - 1) * stride + 1,
           x.shape[3]), (1, stride, stride, 1))


def pool(x: jax.Array, kind: str, window: int, stride: int, impl: str) -> jax.Array:
  """Max or average pooling with "same" padding; averages count real pixels only (count_include_pad=False).

  ``impl="shift"`` pools separably: a k-tap reduction of shifted row slices, then of shifted column slices
  (2k slices instead of k*k; both max and sum are separable). XLA:CPU fuses these into a few elementwise
  loops, while it runs ``reduce_window`` and especially its max-pool gradient (select-and-scatter) as slow
  generic kernels. Forward + backward at 64x28x28x16, stride 1, on the project's 2-core CPU: average
  pooling 11.8 ms as ``reduce_window``, 8.4 ms as k*k shifted slices, 2.2 ms separable; max pooling 44.8,
  25.5 and 6.1 ms. The max's gradient under autodiff splits ties evenly between the tied inputs (a valid
  subgradient; PyTorch routes it to the first maximum). An earlier arg-max gradient rule for k*k slices
  (first maximum, written to spare the compiler a chain of selects) ran 8x slower than the separable form
  at stride 1 and compiled no faster inside the scanned supernet (weights step: 83.7 s compile either way).
  """
  p = window // 2
  if impl != "shift":
    pad = ((p, p), (p, p))
    if kind == "max":
      return nn.max_pool(x, (window, window), (stride, stride), pad)
    return nn.avg_pool(x, (window, window), (stride, stride), pad, count_include_pad=False)
  if kind == "max":
    return _separable_pool(x, window, stride, "max")
  ones = np.pad(np.ones(x.shape[1:3], np.float32), p)
  counts = sum(v for _, _, v in _shifted_windows_np(ones, window, stride))
  return _separable_pool(x, window, stride, "sum") / jnp.asarray(counts, x.dtype)[None, :, :, None]


def _separable_pool(x: jax.Array, window: int, stride: int, reduce: str) -> jax.Array:
  """Window max or sum with "same" padding as a pass over rows, then over columns."""
  p = window // 2
  combine = jnp.maximum if reduce == "max" else jnp.add
  fill = -jnp.inf if reduce == "max" else 0.0
  out_h = (x.shape[1] - 1) // stride + 1
  out_w = (x.shape[2] - 1) // stride + 1
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=fill)
  rows = None
  for i in range(window):
    view = lax.slice(xp, (0, i, 0, 0), (xp.shape[0], i + (out_h - 1) * stride + 1, xp.shape[2], xp.shape[3]),
                     (1, stride, 1, 1))
    rows = view if rows is None else combine(rows, view)
  out = None
  for j in range(window):
    view = lax.slice(rows, (0, 0, j, 0),
                     (rows.shape[0], rows.shape[1], j + (out_w - 1) * stride + 1, rows.shape[3]), (1, 1, stride, 1))
    out = view if out is None else combine(out, view)
  return out


def _shifted_windows_np(plane: np.ndarray, window: int, stride: int):
  out_h = (plane.shape[0] - window) // stride + 1
  out_w = (plane.shape[1] - window) // stride + 1
  for i in range(window):
    for j in range(window):
      yield i, j, plane[i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride]


def batch_norm(train: bool, affine: bool, name: str | None = None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      use_scale=affine, use_bias=affine, name=name)


class DepthwiseConv(nn.Module):
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  impl: Impl = Impl(conv="xla")

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=-1),
                        (self.kernel_size, self.kernel_size, 1, channels))
    conv_impl = resolve_conv_impl(self.impl.conv)
    impl = resolve_dw_impl(self.impl.depthwise, channels, custom_gradient=conv_impl == "canonical")
    return depthwise_conv(x, kernel, self.stride, self.dilation, impl, conv_impl)


class Pointwise(nn.Module):
  """1x1 convolution as a matrix product, so a vmap over edges becomes one batched matmul."""
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    if self.stride > 1:
      x = x[:, ::self.stride, ::self.stride, :]
    return jnp.einsum("bhwc,cd->bhwd", x, kernel)


class Conv(nn.Module):
  """Bias-free convolution with the papers' symmetric padding, through :func:`nasjax.nn.conv.conv2d`.

  Same parameter (``kernel``, HWIO, LeCun normal) as ``flax.linen.Conv(use_bias=False)``.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  dilation: int = 1
  impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features))
    return conv2d(x, kernel, self.strides, _pad_pairs(self.kernel_size, self.dilation), self.dilation,
                  self.impl)


def conv(features: int, kernel: Sequence[int], stride: Sequence[int] | int = 1, dilation: int = 1,
         name: str | None = None, impl: str = "xla") -> Conv:
  strides = (stride, stride) if isinstance(stride, int) else tuple(stride)
  return Conv(features, tuple(kernel), strides, dilation, impl, name=name)


class Zero(nn.Module):
  """The ``none`` op: a zero tensor of the output shape (kept so mixed edges can learn to drop an edge)."""
  stride: int = 1

  def __call__(self, x, train: bool = False):
    del train
    return jnp.zeros_like(x[:, ::self.stride, ::self.stride, :])


class Identity(nn.Module):
  def __call__(self, x, train: bool = False):
    del train
    return x


class FactorizedReduce(nn.Module):
  """Halves the resolution with two offset stride-2 1x1 convolutions, each giving half the channels.

  ``relu``: rectify the input first (DARTS' cells); ENAS' macro network reduces its layer outputs without.
  """
  features: int
  affine: bool = True
  relu: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.features % 2:
      raise NasjaxError(f"FactorizedReduce needs an even channel count, got {self.features}")
    if self.relu:
      x = nn.relu(x)
    # Pad after the one-pixel shift so both paths agree in size for odd resolutions too.
    shifted = jnp.pad(x[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0)))
    a = Pointwise(self.features // 2, 2)(x)
    b = Pointwise(self.features // 2, 2)(shifted)
    return batch_norm(train, self.affine)(jnp.concatenate([a, b], axis=-1))


class ReLUConvBN(nn.Module):
  features: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  dilation: int = 1
  affine: bool = True
  impl: Impl = Impl(conv="xla")

  @nn.compact
  def __call__(self, x, train: bool = False):
    if tuple(self.kernel) == (1, 1) and self.dilation == 1:
      x = Pointwise(self.features, self.stride)(nn.relu(x))
    else:
      x = conv(self.features, self.kernel, self.stride, self.dilation, impl=self.impl.conv)(nn.relu(x))
    return batch_norm(train, self.affine)(x)


def preprocess_cell_inputs(s0, s1, channels: int, reduction_prev: bool, affine: bool, train: bool):
  """Brings a cell's two inputs to ``channels`` (and s0 to s1's resolution after a reduction cell).

  Call from a compact method: the modules become children of the calling cell.
  """
  return (preprocess_s0(s0, channels, reduction_prev, affine, train),
          preprocess_s1(s1, channels, affine, train))


def preprocess_s0(s0, channels: int, reduction_prev: bool, affine: bool, train: bool,
                  name: str = "preprocess0"):
  """A cell's first input (from two cells back) at ``channels``, halved in resolution after a reduction."""
  if reduction_prev:
    return FactorizedReduce(channels, affine, name=name)(s0, train)
  return ReLUConvBN(channels, affine=affine, name=name)(s0, train)


def preprocess_s1(s1, channels: int, affine: bool, train: bool, name: str = "preprocess1"):
  """A cell's second input (the previous cell's output) at ``channels``."""
  return ReLUConvBN(channels, affine=affine, name=name)(s1, train)


class DilConv(nn.Module):
  """ReLU, depthwise (possibly dilated) conv, pointwise conv, BN: DARTS' ``dil_conv``."""
  features: int
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  affine: bool = True
  impl: Impl = Impl(conv="xla")

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = DepthwiseConv(self.kernel_size, self.stride, self.dilation, self.impl)(nn.relu(x))
    x = Pointwise(self.features)(x)
    return batch_norm(train, self.affine)(x)


class SepConv(nn.Module):
  """Two stacked depthwise-separable blocks, the first carrying the stride (DARTS, NASNet)."""
  features: int
  kernel_size: int
  stride: int = 1
  affine: bool = True
  impl: Impl = Impl(conv="xla")

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = DilConv(x.shape[-1], self.kernel_size, self.stride, 1, self.affine, self.impl)(x, train)
    return DilConv(self.features, self.kernel_size, 1, 1, self.affine, self.impl)(x, train)


class Pool(nn.Module):
  kind: str
  window: int
  stride: int = 1
  impl: str = "auto"

  def __call__(self, x, train: bool = False):
    del train
    return pool(x, self.kind, self.window, self.stride, resolve_pool_impl(self.impl))


class FactorizedConv(nn.Module):
  """NASNet's 1xk-then-kx1 convolution (stride split over the two factors)."""
  features: int
  kernel_size: int
  stride: int = 1
  affine: bool = True
  impl: Impl = Impl(conv="xla")

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(x)
    x = conv(self.features, (1, self.kernel_size), (1, self.stride), impl=self.impl.conv)(x)
    x = conv(self.features, (self.kernel_size, 1), (self.stride, 1), impl=self.impl.conv)(x)
    return batch_norm(train, self.affine)(x)


@register_op("none", "zero", parameter_free=True)
def _none(c: OpConfig) -> nn.Module:
  return Zero(c.stride)


@register_op("skip_connect", "identity", parameter_free=True)
def _skip(c: OpConfig) -> nn.Module:
  return Identity() if c.stride == 1 else FactorizedReduce(c.channels, c.affine)


for _k in (3, 5, 7):
  register_op(f"max_pool_{_k}x{_k}", "max_pool", _k, parameter_free=True)(
      lambda c, k=_k: Pool("max", k, c.stride, c.impl.pool))
register_op("avg_pool_3x3", "avg_pool", 3, parameter_free=True)(lambda c: Pool("avg", 3, c.stride, c.impl.pool))
for _k in (3, 5, 7):
  register_op(f"sep_conv_{_k}x{_k}", "sep_conv", _k)(
      lambda c, k=_k: SepConv(c.channels, k, c.stride, c.affine, c.impl))
for _k in (3, 5):
  register_op(f"dil_conv_{_k}x{_k}", "dil_conv", _k, dilation=2)(
      lambda c, k=_k: DilConv(c.channels, k, c.stride, 2, c.affine, c.impl))
for _k in (1, 3, 5):
  # NASNet / ENAS-macro plain convolutions, and NAS-Bench-201's nor_conv (ReLU-Conv-BN).
  register_op(f"conv_{_k}x{_k}", "conv", _k)(
      lambda c, k=_k: ReLUConvBN(c.channels, (k, k), c.stride, 1, c.affine, c.impl))
for _k in (1, 3):
  register_op(f"nor_conv_{_k}x{_k}", "conv", _k)(
      lambda c, k=_k: ReLUConvBN(c.channels, (k, k), c.stride, 1, c.affine, c.impl))
register_op("conv_3x1_1x3", "factorized_conv", 3)(lambda c: FactorizedConv(c.channels, 3, c.stride, c.affine, c.impl))
register_op("conv_7x1_1x7", "factorized_conv", 7)(lambda c: FactorizedConv(c.channels, 7, c.stride, c.affine, c.impl))
del _k
