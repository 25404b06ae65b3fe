"""The model-function contract of the training engine, and its adapter for the DARTS ``Network``.

A model is two pure functions:

* ``model_init(key) -> variables`` (``{"params": ..., "batch_stats": ...}``), and
* ``model_fn(variables, x, *, train, rng, drop_path_prob, extra) -> (logits, aux_logits_or_None,
  new_batch_stats)``.

``extra`` is a pytree carried in the train state (a discrete architecture for the supernet's discrete path,
...), so changing it never recompiles a step. Any Flax module fits with a few lines (see
:func:`network_model_fn`; :func:`nasjax.nn.chain_network.chain_model_fn` for the macro spaces).
"""

from __future__ import annotations

from typing import Any, Callable

import jax

ModelFn = Callable[..., tuple[jax.Array, Any, Any]]


def network_model_fn(network) -> ModelFn:
  """The ``model_fn`` of a :class:`nasjax.nn.network.Network` (auxiliary head, drop-path, BatchNorm)."""
  def model_fn(variables, x, *, train, rng, drop_path_prob, extra):
    del extra
    if not train:
      return (*network.apply(variables, x, train=False), variables.get("batch_stats", {}))
    (logits, aux), updates = network.apply(variables, x, train=True, drop_path_prob=drop_path_prob,
                                           rngs={"dropout": rng}, mutable=["batch_stats"])
    return logits, aux, updates["batch_stats"]
  return model_fn
