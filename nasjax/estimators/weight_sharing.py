"""Weight-sharing estimator: a discrete architecture's accuracy under a trained supernet's weights.

One-shot NAS ranks candidates by evaluating them with weights inherited from a supernet instead of
training each one (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018;
Bender et al., "Understanding and Simplifying One-Shot Architecture Search", ICML 2018). The BatchNorm
running statistics a supernet accumulated while training all paths do not fit any single path, so
before evaluating, SPOS (Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform
Sampling", ECCV 2020) recomputes them for the candidate on a few training batches. We do the same: the
recomputed running mean and variance of every BN layer are the averages over the batches of the
per-batch statistics (PyTorch's cumulative ``momentum=None`` mode; variances biased, as Flax computes
them), then the candidate is evaluated on validation batches with those statistics.

Everything is one pure function of ``(variables, arch, batches)``, jittable, so one compiled program
serves every architecture and a population can be ``vmap``-ed. Only the BN layers the architecture uses
get meaningful statistics; those of ops it does not use end at zero, which that architecture never reads.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from nasjax.errors import NasjaxError
from nasjax.estimators.base import as_estimator
from nasjax.nn.cell_network import SharedCellNetwork
from nasjax.nn.ops import BN_MOMENTUM
from nasjax.spaces.enas_macro import EnasMacroSpace
from nasjax.spaces.nb201 import NB201Space


def recalibrate_batch_stats(model, variables, arch, images, *, rngs=None) -> dict:
  """``variables`` with ``batch_stats`` recomputed for ``arch`` from ``images: f32[K, B, H, W, C]``.

  ``model.apply(variables, x, arch, train=True, mutable=["batch_stats"])`` must run the model in
  training mode (Supernet, NB201Network). Flax updates a running statistic as ``m * old + (1 - m) *
  batch``; starting from zero, ``batch = new / (1 - m)`` recovers each batch's statistic exactly up to
  rounding, and BN in training mode normalises with the batch's own statistics, so the K batches are
  independent and their statistics can simply be averaged.
  """
  if "batch_stats" not in variables:
    raise NasjaxError("the model has no batch_stats collection: there is nothing to recalibrate")
  images = jnp.asarray(images)
  zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])

  def add_batch(total, x):
    _, updates = model.apply({**variables, "batch_stats": zeros}, x, arch, train=True, rngs=rngs,
                             mutable=["batch_stats"])
    return jax.tree.map(lambda t, s: t + s / (1.0 - BN_MOMENTUM), total, updates["batch_stats"]), None

  total, _ = lax.scan(add_batch, zeros, images)
  return {**variables, "batch_stats": jax.tree.map(lambda t: t / images.shape[0], total)}


def evaluate(model, variables, arch, images, labels) -> dict:
  """Mean accuracy (a fraction) and cross-entropy of ``model`` in evaluation mode over stacked batches
  ``images: f32[V, B, ...]``, ``labels: int[V, B]``."""
  def add_batch(totals, batch):
    x, y = batch
    logits = model.apply(variables, x, arch, train=False)
    logits = logits[0] if isinstance(logits, tuple) else logits
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
    correct = jnp.sum(jnp.argmax(logits, -1) == y)
    return (totals[0] + loss, totals[1] + correct), None

  (loss, correct), _ = lax.scan(add_batch, (jnp.float32(0), jnp.int32(0)), (images, labels))
  n = labels.size
  return {"accuracy": correct / n, "loss": loss / n}


def shared_weight_metrics(model, variables, arch, train_images, valid_images, valid_labels) -> dict:
  """SPOS evaluation: recalibrate BN on ``train_images`` for ``arch``, then evaluate on the validation
  batches. Pure and jittable (close over ``model``)."""
  recalibrated = recalibrate_batch_stats(model, variables, arch, train_images)
  return evaluate(model, recalibrated, arch, valid_images, valid_labels)


def stack_batches(batches, *, need_labels: bool, what: str) -> tuple[jax.Array, jax.Array | None]:
  """``(images[K, B, ...], labels[K, B] or None)`` from a list of ``(x, y)`` batches or stacked arrays."""
  if isinstance(batches, (tuple, list)) and len(batches) == 2 and np.ndim(batches[0]) == 5:
    images, labels = batches
  elif isinstance(batches, (tuple, list)) and batches and isinstance(batches[0], (tuple, list)):
    if any(len(b) != 2 for b in batches):
      raise NasjaxError(f"{what}: every batch must be an (images, labels) pair")
    shapes = {(np.shape(x), np.shape(y)) for x, y in batches}
    if len(shapes) != 1:
      raise NasjaxError(f"{what}: all batches need the same shapes (pad or drop the last one); got {shapes}")
    images, labels = np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches])
  elif not need_labels and np.ndim(batches) == 5:
    images, labels = batches, None
  else:
    raise NasjaxError(f"{what}: expected a list of (images[B, H, W, C], labels[B]) batches or stacked "
                      f"(images[K, B, H, W, C], labels[K, B]){'' if need_labels else ' or images alone'}")
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 5 or images.shape[0] < 1:
    raise NasjaxError(f"{what}: images must stack to [K >= 1, B, H, W, C]; got shape {images.shape}")
  if labels is not None:
    labels = jnp.asarray(labels)
    if labels.shape != images.shape[:2] or not jnp.issubdtype(labels.dtype, jnp.integer):
      raise NasjaxError(f"{what}: labels must be integer class indices of shape {images.shape[:2]}; got "
                        f"{labels.dtype} {labels.shape}")
  elif need_labels:
    raise NasjaxError(f"{what}: labels are required")
  return images, labels


def weight_sharing_estimator(space, supernet, variables: Any, train_batches, valid_batches) -> Callable:
  """``(arch, key) -> {"accuracy", "loss"}``: the architecture under ``supernet``'s trained ``variables``.

  Args:
    space: a cell space with ``edge_ops`` (DARTS, NASNet, ENAS micro), whose architectures map to the
      supernet's int32[2, E] op indices, or go to a :class:`~nasjax.nn.cell_network.SharedCellNetwork`
      as they are (exact on NASNet and ENAS micro, where the edge supernet is not); ``NB201Space`` with
      an ``NB201Network`` as the supernet, or ``EnasMacroSpace`` with an ``EnasMacroNetwork``.
    supernet: the Flax module; ``variables`` its trained ``{"params", "batch_stats"}``.
    train_batches: batches for the BN recalibration (labels optional): a list of ``(x, y)`` or stacked
      ``(x[K, B, H, W, C], y[K, B])``.
    valid_batches: evaluation batches, same forms, labels required.

  The result is jitted and deterministic (the key is unused); ``jax.vmap`` over architectures works.
  """
  if isinstance(space, (NB201Space, EnasMacroSpace)) or isinstance(supernet, SharedCellNetwork):
    # Their networks take the space's own encoding.
    to_arch = lambda a: jnp.asarray(a, jnp.int32)  # noqa: E731
  elif hasattr(space, "edge_ops"):
    to_arch = space.edge_ops
  else:
    raise NasjaxError(f"weight_sharing_estimator needs a cell space with edge_ops (darts, nasnet, enas_micro), "
                      f"the nb201 or the enas_macro space; got {getattr(space, 'name', type(space).__name__)!r}")
  if "params" not in variables or "batch_stats" not in variables:
    raise NasjaxError(f"variables must hold 'params' and 'batch_stats'; got {sorted(variables)}")
  train_images, _ = stack_batches(train_batches, need_labels=False, what="train_batches")
  valid_images, valid_labels = stack_batches(valid_batches, need_labels=True, what="valid_batches")

  # Plain jax.jit: a driver vmaps and jits the estimator again, and XLA compile options are accepted only
  # on the outermost jit.
  @jax.jit
  def run(variables, arch, train_images, valid_images, valid_labels):
    return shared_weight_metrics(supernet, variables, to_arch(arch), train_images, valid_images,
                                 valid_labels)

  def estimate(arch, key) -> dict:
    del key  # deterministic: the same batches for every architecture make their scores comparable
    return run(variables, arch, train_images, valid_images, valid_labels)

  return as_estimator(estimate, jittable=True, name="weight_sharing")
