"""Optimizer, jitted train and eval steps of a ``model_fn``, and a masked evaluation over a whole split.

The steps run data-parallel under ``jax.jit`` on a one-axis device mesh: batches are sharded on "data", the
state is replicated, and XLA inserts the gradient all-reduce (BatchNorm statistics are those of the global
batch, so a step on N devices equals the one-device step on the same batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax import data as nasdata
from nasjax.parallel.distributed import to_host
from nasjax.training.model import ModelFn
from nasjax.utils.jit import jit_with_options


def cosine_schedule(cfg, total_steps: int) -> optax.Schedule:
  """``cfg.learning_rate`` annealed to ``cfg.min_learning_rate`` by a cosine over ``total_steps``."""
  return optax.cosine_decay_schedule(cfg.learning_rate, max(1, total_steps),
                                     alpha=cfg.min_learning_rate / cfg.learning_rate)


def sgd_optimizer(cfg, schedule: optax.Schedule, flat: bool = False) -> optax.GradientTransformation:
  """Global-norm clipping at ``cfg.grad_clip``, weight decay ``cfg.weight_decay``, SGD with momentum.

  ``flat``: on one flat vector (``optax.flatten``): a supernet's per-leaf optimizer is hundreds of small
  fused loops in the step's program, a noticeable part of XLA's compile time.
  """
  tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.add_decayed_weights(cfg.weight_decay),
                   optax.sgd(schedule, momentum=cfg.momentum))
  return optax.flatten(tx) if flat else tx


def make_optimizer(cfg, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum, a cosine schedule over ``cfg.epochs``, weight decay and global-norm clipping."""
  return sgd_optimizer(cfg, cosine_schedule(cfg, cfg.epochs * steps_per_epoch))


def make_train_step(model_fn: ModelFn, tx: optax.GradientTransformation, cfg, mean, std):
  """``step(state, images, labels, drop_path_prob) -> (state, {"loss", "accuracy", "grad_norm"})``, jitted
  with the state donated: augmentation (crop, flip, cutout), cross-entropy plus the auxiliary head's."""
  aug = dict(crop_padding=cfg.crop_padding, flip=cfg.flip, cutout_size=cfg.cutout, mean=mean, std=std)

  def train_step(state, images, labels, drop_path_prob):
    key = jax.random.fold_in(state["key"], state["step"])
    aug_key, drop_key = jax.random.split(key)
    x = nasdata.augment_batch(aug_key, images, **aug)

    def loss_fn(params):
      logits, aux, new_stats = model_fn({"params": params, "batch_stats": state["batch_stats"]}, x,
                                        train=True, rng=drop_key, drop_path_prob=drop_path_prob,
                                        extra=state["extra"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      total = loss
      if aux is not None and cfg.auxiliary:
        total = loss + cfg.auxiliary_weight * optax.softmax_cross_entropy_with_integer_labels(
            aux, labels).mean()
      return total, (loss, logits, new_stats)

    (_, (loss, logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    new_state = dict(state, params=params, batch_stats=new_stats, opt_state=opt_state,
                     step=state["step"] + 1)
    return new_state, {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}

  return jit_with_options(train_step, donate_argnums=(0,))


def make_eval_step(model_fn: ModelFn, mean, std):
  """``eval_step(state, images, labels, mask) -> (loss sum, correct count, example count)``, jitted."""
  def eval_step(state, images, labels, mask):
    x = nasdata.normalize(images, mean, std)
    logits, _, _ = model_fn({"params": state["params"], "batch_stats": state["batch_stats"]}, x,
                            train=False, rng=None, drop_path_prob=0.0, extra=state["extra"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
    return jnp.sum(losses * mask), jnp.sum(correct * mask), jnp.sum(mask)
  return jit_with_options(eval_step)


def evaluate(eval_step, state, x, y, batch_size: int, mesh) -> dict[str, float]:
  """Loss and accuracy over all of (x, y); the last batch is padded and masked to keep shapes static.

  ``eval_step`` is any ``(state, images, labels, mask) -> (loss sum, correct, count)`` (the one-shot
  search's evaluates its supernet this way too).
  """
  n = len(x)
  batch_size = min(batch_size, n)
  batch_size = max(mesh.size, batch_size - batch_size % mesh.size)
  totals = np.zeros(3)
  for start in range(0, n, batch_size):
    xb, yb = x[start:start + batch_size], y[start:start + batch_size]
    mask = np.ones(len(xb), np.float32)
    if len(xb) < batch_size:
      pad = batch_size - len(xb)
      xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
      yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
      mask = np.concatenate([mask, np.zeros(pad, np.float32)])
    batch = nasdata.shard_batch((xb, yb, mask), mesh)
    totals += np.asarray([float(v) for v in to_host(eval_step(state, *batch))])
  return {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}
