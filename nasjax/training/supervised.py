"""Supervised training of one model on the engine's loop: :func:`fit` (set-up, resume, checkpoints) and
:func:`run_epochs` (the epochs, given compiled steps: estimators reuse them across architectures)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np

from nasjax import data as nasdata
from nasjax.training.loop import EpochEnd, check_batch_size, run_loop
from nasjax.training.model import ModelFn
from nasjax.training.run import Position, Run
from nasjax.training.state import init_state
from nasjax.training.steps import evaluate, make_eval_step, make_optimizer, make_train_step


@dataclasses.dataclass
class FitResult:
  state: dict
  history: list
  final: dict
  finished: bool = True


def run_epochs(train_step, eval_step, state, batcher, cfg, mesh, *, start_epoch=0, history=None,
               x_eval=None, y_eval=None, run: Run | None = None, show_progress=True, eval_every_epoch=True,
               workdir=None, stop_after=None, start: Position | None = None, stop_after_steps=None):
  """Epochs ``start_epoch`` .. ``cfg.epochs - 1`` of ``train_step`` (:func:`make_train_step`) over
  ``batcher``; returns ``(state, history)``.

  Drop-path grows linearly with the epoch (``cfg.drop_path``); with ``eval_step`` each epoch (or only the
  last one) is evaluated on (x_eval, y_eval). With ``run`` records are logged and the state checkpointed
  every ``cfg.checkpoint_every`` epochs, and inside an epoch every ``cfg.checkpoint_every_steps`` steps
  where the config has that key (the run must number checkpoints by step: ``Run(steps_per_epoch=...)``).
  ``start`` (a :class:`Position`, which overrides ``start_epoch``) resumes inside an epoch with its running
  sums. ``stop_after`` / ``stop_after_steps`` end the loop after that many epochs / steps of this call (as
  a killed process would). A NaN/Inf training loss raises :class:`~nasjax.errors.DivergenceError`.
  """
  drop_probs: dict[int, jnp.ndarray] = {}

  def drop_prob(epoch):
    if epoch not in drop_probs:
      drop_probs[epoch] = jnp.asarray(cfg.drop_path * epoch / max(1, cfg.epochs), jnp.float32)
    return drop_probs[epoch]

  def step_fn(state, batch, epoch):
    return train_step(state, *batch, drop_prob(epoch))

  def batches(epoch, start_step):
    for xb, yb in batcher.epoch(epoch, start_step):
      yield xb, yb.astype(np.int32)

  def end_epoch(state, info: EpochEnd, history):
    record = {"epoch": info.epoch + 1, "train_loss": info.sums["loss"] / info.steps,
              "train_accuracy": info.sums["accuracy"] / info.steps,
              "drop_path_prob": float(drop_prob(info.epoch)), "seconds": info.seconds,
              "images_per_s": info.steps * cfg.batch_size / info.seconds}
    if eval_step is not None and (eval_every_epoch or info.epoch + 1 == cfg.epochs):
      ev = evaluate(eval_step, state, x_eval, y_eval, cfg.eval_batch_size, mesh)
      record.update(eval_loss=ev["loss"], eval_accuracy=ev["accuracy"])
    return record

  def message(metric, value, epoch, step):
    return (f"training {metric} became {value} at epoch {epoch}, step {step}; the last good checkpoint "
            f"(epoch {epoch - 1}) is kept" + (f" in {workdir}" if workdir else ""))

  out = run_loop(step_fn, state, batches, epochs=cfg.epochs, steps_per_epoch=batcher.steps_per_epoch,
                 end_epoch=end_epoch, mesh=mesh, start=start or Position(start_epoch), history=history or [],
                 run=run, initial_sums={"loss": 0.0, "accuracy": 0.0}, guard=("loss",), divergence_message=message,
                 checkpoint_every=cfg.checkpoint_every, checkpoint_every_steps=cfg.get("checkpoint_every_steps", 0),
                 stop_after_epochs=stop_after, stop_after_steps=stop_after_steps, desc="epoch",
                 show_progress=show_progress, images_per_step=cfg.batch_size)
  return out.state, out.history


def fit(model_fn: ModelFn, model_init: Callable, cfg, x_train, y_train, x_eval=None, y_eval=None, *,
        mean, std, workdir: str | None = None, extra=None, identity: dict | None = None,
        show_progress: bool = True, eval_every_epoch: bool = True, mesh=None,
        stop_after_epochs: int | None = None, stop_after_steps: int | None = None) -> FitResult:
  """Trains for ``cfg.epochs`` epochs; with ``workdir``, checkpoints each epoch (and every
  ``cfg.checkpoint_every_steps`` steps where that is set, so a kill costs minutes, not an epoch) and resumes
  exactly from the newest checkpoint, inside an epoch too.

  ``identity`` (config, architecture, data) is stored with every checkpoint; a resume whose identity
  differs is refused, so a checkpoint is never continued under another setting. ``stop_after_epochs``
  / ``stop_after_steps`` end this call early, as a killed process would (``finished=False``).
  """
  mesh = mesh or nasdata.data_mesh()
  check_batch_size(cfg.batch_size, mesh)
  batcher = nasdata.Batcher(x_train, y_train, cfg.batch_size, seed=cfg.seed)
  tx = make_optimizer(cfg, batcher.steps_per_epoch)
  history: list = []
  position = Position()
  run = None
  if workdir is not None:
    # Checkpoints inside an epoch are numbered by global step and carry the epoch's running sums.
    by_step = batcher.steps_per_epoch if cfg.get("checkpoint_every_steps", 0) else None
    run = Run(workdir, identity, cfg.keep_checkpoints, steps_per_epoch=by_step)
    run.check()  # a checkpoint of another run is refused before the model is built
  try:
    state = init_state(model_init, tx, cfg.seed, extra)
    if run is not None:
      state, position, history = run.resume(state)
  except BaseException:
    if run is not None:  # every refused path closes the checkpoint manager: nothing prints at shutdown
      run.close()
    raise
  try:
    state = nasdata.replicate(state, mesh)
    train_step = make_train_step(model_fn, tx, cfg, mean, std)
    eval_step = make_eval_step(model_fn, mean, std) if x_eval is not None else None
    state, history = run_epochs(train_step, eval_step, state, batcher, cfg, mesh, start=position,
                                history=history, x_eval=x_eval, y_eval=y_eval, run=run,
                                show_progress=show_progress, eval_every_epoch=eval_every_epoch,
                                workdir=workdir, stop_after=stop_after_epochs, stop_after_steps=stop_after_steps)
  finally:
    if run is not None:
      run.close()
  return FitResult(state=state, history=history, final=history[-1] if history else {},
                   finished=len(history) >= cfg.epochs)
