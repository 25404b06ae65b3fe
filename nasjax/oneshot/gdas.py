"""GDAS: a hard Gumbel-softmax sample per edge, so only the sampled op is computed (Dong & Yang,
"Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019).

The forward pass uses a one-hot sample; the backward pass takes the straight-through gradient of the
tempered softmax, as GDAS does: ``hard - stop_gradient(soft) + soft``. The temperature decays linearly
from ``tau_max`` (10) to ``tau_min`` (0.1) over the search, as in the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nasjax.oneshot.method import Method, cell_types, init_logits, softmax_probabilities


def gumbel_hard(key, logits, tau):
  """One-hot Gumbel-max sample with the straight-through gradient of ``softmax((logits + g) / tau)``."""
  # The uniform draw is kept away from 0 and 1 so the Gumbel noise is always finite (GDAS resamples on inf).
  u = jax.random.uniform(key, logits.shape, minval=1e-10, maxval=1.0 - 1e-7)
  soft = jax.nn.softmax((jax.nn.log_softmax(logits, axis=-1) - jnp.log(-jnp.log(u))) / tau, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
  return hard - jax.lax.stop_gradient(soft) + soft


def gdas(tau_max: float = 10.0, tau_min: float = 0.1) -> Method:
  def mix(arch_params, key, progress):
    tau = tau_max - (tau_max - tau_min) * progress
    cells = cell_types(arch_params)
    keys = jax.random.split(key, len(cells))
    return {c: gumbel_hard(k, arch_params[c], tau) for c, k in zip(cells, keys)}

  return Method("gdas", init_logits, mix, softmax_probabilities, hard=True)
