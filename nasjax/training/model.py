"""The model-function contract of the training engine, and its adapter for the DARTS ``Network``.

A model is two pure functions:

* ``model_init(key) -> variables`` (``{"params": ..., "batch_stats": ...}``), and
* ``model_fn(variables, x, *, train, rng, drop_path_prob, extra) -> (logits, aux_logits_or_None,
  new_batch_stats)``.

``extra`` is a pytree carried in the train state (a discrete architecture for the supernet's discrete path,
...), so changing it never recompiles a step. Any Flax module fits with a few lines (see
:func:`network_model_fn`; :func:`plain_model_fn` for a module that returns logits, e.g. the macro spaces'
chain networks, the supernet's discrete path and NB201's switch network).
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


def plain_model_fn(module, takes_arch: bool = False) -> ModelFn:
  """The ``model_fn`` of a module called as ``apply(variables, x[, arch], train=...)`` that returns logits
  and keeps BatchNorm statistics; with ``takes_arch`` the architecture is the state's ``extra``."""
  def model_fn(variables, x, *, train, rng, drop_path_prob, extra):
    del rng, drop_path_prob
    args = (x, extra) if takes_arch else (x,)
    if not train:
      return module.apply(variables, *args, train=False), None, variables.get("batch_stats", {})
    logits, updates = module.apply(variables, *args, train=True, mutable=["batch_stats"])
    return logits, None, updates["batch_stats"]
  return model_fn
