"""Training a network under a paper's protocol: data-parallel, checkpointed every epoch, exactly resumable.

The default is the DARTS evaluation protocol (Liu et al. 2019, section 3.3 and appendix A.2): SGD with
momentum 0.9, learning rate 0.025 annealed to 0 by a cosine schedule, weight decay 3e-4, batch 96, 600
epochs, cutout 16 (DeVries & Taylor 2017), drop-path 0.2 growing linearly over training, auxiliary loss
weight 0.4, gradient-norm clipping at 5, 36 initial channels and 20 cells.

One loop serves every model: a ``model_fn(variables, x, *, train, rng, drop_path_prob, extra)`` returning
``(logits, aux_logits_or_None, new_batch_stats)``. ``extra`` is a pytree carried in the train state (a
discrete architecture for the weight-sharing estimator), so changing it never recompiles.

Data parallelism is ``jax.jit`` over a one-axis device mesh: batches are sharded on "data", the state is
replicated, and XLA inserts the gradient all-reduce (BatchNorm statistics are those of the global batch, so
a step on N devices equals the one-device step on the same batch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nasjax import data as nasdata
from nasjax.errors import DivergenceError, NasjaxError
from nasjax.nn.network import Network
from nasjax.parallel.distributed import is_main_process, to_host
from nasjax.utils import checkpoint as ckpt
from nasjax.utils.jit import jit_with_options
from nasjax.utils.logging import MetricsLogger, progress

ModelFn = Callable[..., tuple[jax.Array, Any, Any]]


def darts_eval_config() -> ml_collections.ConfigDict:
  """The DARTS CIFAR-10 evaluation protocol."""
  return ml_collections.ConfigDict(dict(
      epochs=600, batch_size=96, learning_rate=0.025, min_learning_rate=0.0, momentum=0.9,
      weight_decay=3e-4, grad_clip=5.0, cutout=16, crop_padding=4, flip=True, drop_path=0.2,
      auxiliary=True, auxiliary_weight=0.4, channels=36, layers=20, seed=0, eval_batch_size=500,
      checkpoint_every=1, keep_checkpoints=2, train_subset=0))


def demo_config() -> ml_collections.ConfigDict:
  """A few-minute CPU run of the same protocol on a small network (28x28 grey images: no flip)."""
  cfg = darts_eval_config()
  cfg.update(epochs=2, batch_size=64, channels=8, layers=3, cutout=8, flip=False, drop_path=0.1,
             auxiliary=False, eval_batch_size=250)
  return cfg


def make_optimizer(cfg, steps_per_epoch: int) -> optax.GradientTransformation:
  schedule = optax.cosine_decay_schedule(cfg.learning_rate, max(1, cfg.epochs * steps_per_epoch),
                                         alpha=cfg.min_learning_rate / cfg.learning_rate)
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.add_decayed_weights(cfg.weight_decay),
                     optax.sgd(schedule, momentum=cfg.momentum))


def network_model_fn(network: Network) -> ModelFn:
  def model_fn(variables, x, *, train, rng, drop_path_prob, extra):
    del extra
    if not train:
      return (*network.apply(variables, x, train=False), variables.get("batch_stats", {}))
    (logits, aux), updates = network.apply(variables, x, train=True, drop_path_prob=drop_path_prob,
                                           rngs={"dropout": rng}, mutable=["batch_stats"])
    return logits, aux, updates["batch_stats"]
  return model_fn


def make_train_step(model_fn: ModelFn, tx: optax.GradientTransformation, cfg, mean, std):
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
  def eval_step(state, images, labels, mask):
    x = nasdata.normalize(images, mean, std)
    logits, _, _ = model_fn({"params": state["params"], "batch_stats": state["batch_stats"]}, x,
                            train=False, rng=None, drop_path_prob=0.0, extra=state["extra"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
    return jnp.sum(losses * mask), jnp.sum(correct * mask), jnp.sum(mask)
  return jit_with_options(eval_step)


def evaluate(eval_step, state, x, y, batch_size: int, mesh) -> dict[str, float]:
  """Loss and accuracy over all of (x, y); the last batch is padded and masked to keep shapes static."""
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


def init_key(seed: int) -> jax.Array:
  """The parameter-initialisation key of ``seed``.

  An "rbg" key: XLA:CPU compiles the hundreds of threefry initialisers of a supernet about twice as slowly
  (tiny DARTS supernet: 68 s vs 34 s). Still deterministic for a seed on a given backend.
  """
  return jax.random.key(seed, impl="rbg")


def init_state(model_init: Callable[[jax.Array], dict], tx, seed: int, extra=None) -> dict:
  _, train_key = jax.random.split(jax.random.key(seed))
  variables = jit_with_options(model_init)(init_key(seed))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
          "opt_state": tx.init(variables["params"]), "step": jnp.zeros((), jnp.int32),
          "key": jax.random.key_data(train_key), "extra": extra if extra is not None else {}}


@dataclasses.dataclass
class FitResult:
  state: dict
  history: list
  final: dict


def fit(model_fn: ModelFn, model_init: Callable, cfg, x_train, y_train, x_eval=None, y_eval=None, *,
        mean, std, workdir: str | None = None, extra=None, identity: dict | None = None,
        show_progress: bool = True, eval_every_epoch: bool = True, mesh=None) -> FitResult:
  """Trains for ``cfg.epochs`` epochs; with ``workdir``, checkpoints each epoch and resumes from it.

  ``identity`` (config, architecture, data) is stored with every checkpoint; a resume whose identity
  differs is refused, so a checkpoint is never continued under another setting.
  """
  mesh = mesh or nasdata.data_mesh()
  if cfg.batch_size % mesh.size:
    raise NasjaxError(f"batch size {cfg.batch_size} must be divisible by the {mesh.size} devices")
  batcher = nasdata.Batcher(x_train, y_train, cfg.batch_size, seed=cfg.seed)
  tx = make_optimizer(cfg, batcher.steps_per_epoch)
  state = init_state(model_init, tx, cfg.seed, extra)
  history: list = []
  start_epoch = 0
  manager = None
  logger = None
  if workdir is not None:
    os.makedirs(workdir, exist_ok=True)
    manager = ckpt.Manager(os.path.join(os.path.abspath(workdir), "checkpoints"), cfg.keep_checkpoints)
    restored = manager.restore_latest(state, identity or {})
    if restored is not None:
      state, meta = restored
      start_epoch, history = meta["epoch"], meta["history"]
    # Process 0 alone writes the log of a multi-process job; checkpoints coordinate their own writes.
    logger = MetricsLogger(workdir, truncate_after_epoch=start_epoch) if is_main_process() else None
  state = nasdata.replicate(state, mesh)
  train_step = make_train_step(model_fn, tx, cfg, mean, std)
  eval_step = make_eval_step(model_fn, mean, std) if x_eval is not None else None
  state, history = run_epochs(train_step, eval_step, state, batcher, cfg, mesh, start_epoch=start_epoch,
                              history=history, x_eval=x_eval, y_eval=y_eval, logger=logger,
                              manager=manager, identity=identity, show_progress=show_progress,
                              eval_every_epoch=eval_every_epoch, workdir=workdir)
  if manager is not None:
    manager.close()
  return FitResult(state=state, history=history, final=history[-1] if history else {})


def run_epochs(train_step, eval_step, state, batcher, cfg, mesh, *, start_epoch=0, history=None,
               x_eval=None, y_eval=None, logger=None, manager=None, identity=None, show_progress=True,
               eval_every_epoch=True, workdir=None, stop_after=None):
  """The epoch loop of :func:`fit`, given compiled steps (estimators reuse them across architectures).

  ``stop_after`` ends the loop after that many epochs of this call (as a killed process would).
  """
  history = list(history or [])
  end = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
  for epoch in range(start_epoch, end):
    drop_prob = jnp.asarray(cfg.drop_path * epoch / max(1, cfg.epochs), jnp.float32)
    sums = {"loss": 0.0, "accuracy": 0.0}
    t0 = time.perf_counter()
    bar = progress(batcher.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}",
                   show_progress and is_main_process())
    for step, (xb, yb) in enumerate(batcher.epoch(epoch)):
      images, labels = nasdata.shard_batch((xb, yb.astype(np.int32)), mesh)
      state, metrics = train_step(state, images, labels, drop_prob)
      metrics = to_host(metrics)
      loss = float(metrics["loss"])
      if not math.isfinite(loss):
        raise DivergenceError(f"training loss became {loss} at epoch {epoch + 1}, step {step + 1}; the last "
                              f"good checkpoint (epoch {epoch}) is kept" + (f" in {workdir}" if workdir else ""),
                              "loss", loss, epoch + 1, step + 1)
      sums["loss"] += loss
      sums["accuracy"] += float(metrics["accuracy"])
      elapsed = time.perf_counter() - t0
      bar.update(1)
      bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", acc=f"{sums['accuracy'] / (step + 1):.3f}",
                      img_s=f"{(step + 1) * cfg.batch_size / max(elapsed, 1e-9):.0f}")
    bar.close()
    seconds = time.perf_counter() - t0
    record = {"epoch": epoch + 1, "train_loss": sums["loss"] / batcher.steps_per_epoch,
              "train_accuracy": sums["accuracy"] / batcher.steps_per_epoch,
              "drop_path_prob": float(drop_prob), "seconds": seconds,
              "images_per_s": batcher.steps_per_epoch * cfg.batch_size / seconds}
    if eval_step is not None and (eval_every_epoch or epoch + 1 == cfg.epochs):
      ev = evaluate(eval_step, state, x_eval, y_eval, cfg.eval_batch_size, mesh)
      record.update(eval_loss=ev["loss"], eval_accuracy=ev["accuracy"])
    history.append(record)
    if logger is not None:
      logger.write(record)
    if manager is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
      manager.save(epoch + 1, to_host(state), {"epoch": epoch + 1, "history": history,
                                               "identity": identity or {}})
  return state, history


def train_genotype(genotype, dataset: nasdata.Dataset, cfg, workdir: str | None = None,
                   show_progress: bool = True, identity: dict | None = None) -> FitResult:
  """Retrains ``genotype`` on ``dataset`` (test split as the evaluation set) under ``cfg``.

  Checkpoints record ``identity`` and the data's content fingerprint; a resume must match both.
  """
  network = Network(genotype, cfg.channels, cfg.layers, dataset.num_classes, auxiliary=cfg.auxiliary)
  sample = jnp.zeros((2,) + dataset.input_shape, jnp.float32)

  def model_init(key):
    return network.init({"params": key, "dropout": key}, sample, train=False)

  x_train, y_train = dataset.x_train, dataset.y_train
  if cfg.train_subset:
    x_train, y_train = nasdata.subset(x_train, y_train, cfg.train_subset, cfg.seed)
  return fit(network_model_fn(network), model_init, cfg, x_train, y_train,
             dataset.x_test, dataset.y_test, mean=dataset.mean, std=dataset.std, workdir=workdir,
             identity=dict(identity or {}, dataset=dataset.fingerprint), show_progress=show_progress)


def config_to_dict(cfg) -> dict:
  return json.loads(cfg.to_json()) if hasattr(cfg, "to_json") else dict(cfg)
