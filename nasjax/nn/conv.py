"""2-D convolution whose gradients XLA:CPU runs with its fast convolution kernels, also inside loops.

XLA:CPU hands a convolution to its fast (Eigen) kernel only in the canonical form ``NHWC x HWIO ->
NHWC`` without input dilation. The two convolutions that autodiff emits for the backward pass are not in
that form (the kernel gradient contracts over the batch, the input gradient dilates its input); outside a
loop, layout assignment rewrites them, but in the body of a ``lax.scan`` / ``while`` it cannot, and they
fall back to a naive loop nest. Measured on this 2-core CPU (batch 32, 32x32x16, 3x3 kernel, 8 convs,
forward + backward): unrolled 130 ms, ``lax.scan`` 1,776 ms with autodiff's convolutions, 107 ms with the
canonical ones below. Scanning the identical edges of a cell is what keeps a supernet's compile time
small, so every dense convolution of :mod:`nasjax.nn` goes through :func:`conv2d`.

The backward pass here writes both gradients as canonical forward convolutions with explicit transposes
and an explicit interior padding of the output gradient for strides > 1. It is still ordinary JAX code,
so forward-over-reverse (the exact Hessian-vector products of second-order DARTS) differentiates it.
On other backends :func:`conv2d` is the plain ``lax.conv_general_dilated``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from nasjax.errors import NasjaxError

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
CONV_IMPLS = ("auto", "xla", "canonical")


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def resolve_conv_impl(impl: str, backend: str | None = None) -> str:
  """``"auto"`` is the canonical form on CPU (its gradients run on XLA:CPU's fast kernel), XLA's own elsewhere."""
  if impl not in CONV_IMPLS:
    raise NasjaxError(f"unknown convolution implementation {impl!r}; accepted: {', '.join(CONV_IMPLS)}")
  if impl != "auto":
    return impl
  return "canonical" if (backend or jax.default_backend()) == "cpu" else "xla"


def conv2d(x: jax.Array, kernel: jax.Array, stride: int | Sequence[int] = 1,
           padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0)), dilation: int | Sequence[int] = 1,
           impl: str = "auto") -> jax.Array:
  """Dense convolution of NHWC ``x`` with an HWIO ``kernel`` (explicit padding per spatial axis)."""
  stride, dilation = _pair(stride), _pair(dilation)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  impl = resolve_conv_impl(impl)
  if impl == "xla":
    return _xla_conv(x, kernel, stride, padding, dilation)
  return _canonical_conv(x, kernel, stride, padding, dilation)


def _xla_conv(x, kernel, stride, padding, dilation):
  return lax.conv_general_dilated(x, kernel, stride, padding, rhs_dilation=dilation,
                                  dimension_numbers=_DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _canonical_conv(x, kernel, stride, padding, dilation):
  return _xla_conv(x, kernel, stride, padding, dilation)


def _canonical_conv_fwd(x, kernel, stride, padding, dilation):
  return _xla_conv(x, kernel, stride, padding, dilation), (x, kernel)


def _canonical_conv_bwd(stride, padding, dilation, residuals, g):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  spatial_in, spatial_out = x.shape[1:3], g.shape[1:3]
  # Output gradient on the input grid: stride - 1 zeros between its rows/columns.
  dilated_len = [(o - 1) * s + 1 for o, s in zip(spatial_out, stride)]
  padded_in = [n + lo + hi for n, (lo, hi) in zip(spatial_in, padding)]
  taps = [d * (k - 1) for d, k in zip(dilation, (kh, kw))]

  # Input gradient: correlate the dilated gradient with the flipped, in/out-swapped kernel. The edge
  # padding maps the padded input grid back onto x; it stays inside the convolution where it is not
  # negative (a crop), which XLA:CPU runs faster than an explicitly padded operand.
  edges = [(t - lo, n_pad - length - hi) for t, (lo, hi), length, n_pad
           in zip(taps, padding, dilated_len, padded_in)]
  crop = [(min(lo, 0), min(hi, 0)) for lo, hi in edges]
  g_input = g
  if any(s > 1 for s in stride) or any(c != (0, 0) for c in crop):
    g_input = lax.pad(g, jnp.zeros((), g.dtype),
                      [(0, 0, 0), *[(lo, hi, s - 1) for (lo, hi), s in zip(crop, stride)], (0, 0, 0)])
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  dx = lax.conv_general_dilated(g_input, flipped, (1, 1), [(max(lo, 0), max(hi, 0)) for lo, hi in edges],
                                rhs_dilation=dilation, dimension_numbers=_DIMENSIONS)

  dk = kernel_gradient(x, g, (kh, kw), stride, padding, dilation)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


def kernel_gradient(x, g, kernel_size, stride, padding, dilation):
  """d(sum(g * conv(x, K))) / dK for a dense HWIO kernel, as one canonical convolution.

  The channels of ``x`` act as the batch and its batch as the contracted feature axis; the padding
  stays inside the convolution (XLA:CPU's kernel ran 2x slower on an explicitly padded x).
  """
  kh, kw = kernel_size
  g_dilated = lax.pad(g, jnp.zeros((), g.dtype),
                      [(0, 0, 0), (0, 0, stride[0] - 1), (0, 0, stride[1] - 1), (0, 0, 0)])
  dk = lax.conv_general_dilated(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g_dilated, (1, 2, 0, 3)),
                                dilation, padding, dimension_numbers=_DIMENSIONS)
  return jnp.transpose(dk[:, :kh, :kw, :], (1, 2, 0, 3))
