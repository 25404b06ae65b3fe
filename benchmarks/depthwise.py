"""Times the depthwise-convolution formulations of ``nasjax.nn.ops`` (forward + backward), one JSON line each.

    python benchmarks/depthwise.py [--batch 64]

The shapes are those of the DARTS search supernet at batch 64 (16/32/64 channels at 32/16/8 pixels), for
3x3 and 5x5 kernels with dilation 1 (sep_conv) and 2 (dil_conv). ``nasjax.nn.ops.resolve_dw_impl`` picks
its per-backend default from these figures.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from nasjax.nn.ops import depthwise_conv


def time_grad(impl, x, w, dilation, repeats):
  loss = lambda x, w: jnp.sum(depthwise_conv(x, w, 1, dilation, impl) ** 2)  # noqa: E731
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  t0 = time.perf_counter()
  jax.block_until_ready(grad(x, w))
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(grad(x, w))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), compile_s


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()
  for channels, size in ((16, 32), (32, 16), (64, 8)):
    for k, dilation in ((3, 1), (5, 1), (3, 2), (5, 2)):
      x = jax.random.normal(jax.random.key(0), (args.batch, size, size, channels))
      w = 0.1 * jax.random.normal(jax.random.key(1), (k, k, 1, channels))
      row = {"channels": channels, "size": size, "kernel": k, "dilation": dilation,
             "backend": jax.default_backend()}
      for impl in ("grouped", "dense", "shift"):
        med, _ = time_grad(impl, x, w, dilation, args.repeats)
        row[f"{impl}_ms"] = round(med * 1e3, 2)
      print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
