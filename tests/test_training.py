"""The training engine (nasjax.training) on a tiny MLP over 64 images: exact resume after a kill (at an
epoch end and inside an epoch), the NaN/Inf guard, and run identity."""

from __future__ import annotations

import json
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import data as nasdata
from nasjax.errors import DivergenceError, NasjaxError
from nasjax.train import demo_config
from nasjax.training import (Position, Run, fit, init_state, make_optimizer, make_train_step, run_loop)

MEAN, STD = (0.5,), (0.25,)


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
    return nn.Dense(4)(x)


def model_fn(variables, x, *, train, rng, drop_path_prob, extra):
  del train, rng, drop_path_prob, extra
  return MLP().apply({"params": variables["params"]}, x), None, variables.get("batch_stats", {})


def model_init(key):
  return MLP().init(key, jnp.zeros((1, 8, 8, 1)))


def images(n=64, seed=0):
  rng = np.random.default_rng(seed)
  y = np.arange(n) % 4
  x = np.clip(rng.normal(60 * y[:, None, None, None] + 40, 30, (n, 8, 8, 1)), 0, 255).astype(np.uint8)
  return x, y.astype(np.int32)


def tiny_config(**overrides):
  cfg = demo_config()
  cfg.update(epochs=3, batch_size=16, learning_rate=0.1, crop_padding=1, cutout=2, flip=True, drop_path=0.0,
             eval_batch_size=32)
  cfg.update(overrides)
  return cfg


def run_fit(cfg, x, y, workdir, **kwargs):
  kwargs.setdefault("identity", {"model": "mlp"})
  return fit(model_fn, model_init, cfg, x, y, x[:32], y[:32], mean=MEAN, std=STD, workdir=str(workdir),
             show_progress=False, **kwargs)


def untimed(records):
  return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "steady_s_per_step")}
          for r in records]


def assert_same_state(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_killed_after_an_epoch_resumes_bitwise(tmp_path):
  cfg, (x, y) = tiny_config(), images()
  whole = run_fit(cfg, x, y, tmp_path / "whole")
  part = run_fit(cfg, x, y, tmp_path / "killed", stop_after_epochs=1)
  assert not part.finished and len(part.history) == 1
  resumed = run_fit(cfg, x, y, tmp_path / "killed")
  assert resumed.finished and whole.finished
  assert_same_state(whole.state, resumed.state)
  assert untimed(resumed.history) == untimed(whole.history)
  logged = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
  assert untimed(logged) == untimed(whole.history) and [r["epoch"] for r in logged] == [1, 2, 3]
  assert {"epoch", "train_loss", "train_accuracy", "drop_path_prob", "eval_loss", "eval_accuracy"} <= set(logged[0])


def test_nan_loss_raises_divergence_and_keeps_the_last_checkpoint(tmp_path):
  cfg, (x, y) = tiny_config(), images()
  run_fit(cfg, x, y, tmp_path, stop_after_epochs=1)
  # The same run (same identity) continues on data that makes the loss NaN at once.
  poisoned = np.full(x.shape, np.nan, np.float32)
  with pytest.raises(DivergenceError, match=r"loss became nan at epoch 2, step 1") as info:
    run_fit(cfg, poisoned, y, tmp_path)
  e = info.value
  assert isinstance(e, NasjaxError) and (e.metric, e.epoch, e.step) == ("loss", 2, 1) and np.isnan(e.value)
  assert str(tmp_path) in str(e)
  again = pickle.loads(pickle.dumps(e))  # crosses process boundaries (Ray) with its fields
  assert (type(again), str(again), again.epoch, again.step) == (DivergenceError, str(e), 2, 1)
  # Nothing of the diverged epoch was written: the newest checkpoint is epoch 1's, the log has one record.
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
  run = Run(str(tmp_path), {"model": "mlp"}, steps_per_epoch=None)
  tx = make_optimizer(cfg, 4)
  _, position, history = run.resume(init_state(model_init, tx, cfg.seed))
  run.close()
  assert position.epoch == 1 and len(history) == 1


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
  cfg, (x, y) = tiny_config(epochs=1), images()
  run_fit(cfg, x, y, tmp_path, identity={"model": "mlp", "arch": [1, 2]})
  with pytest.raises(NasjaxError, match=r"another run \(differs in: arch\)"):
    run_fit(cfg, x, y, tmp_path, identity={"model": "mlp", "arch": [2, 1]})


def test_killed_inside_an_epoch_resumes_bitwise_with_exact_epoch_means(tmp_path):
  """The loop itself: checkpoints every 2 steps (4 a epoch) carry the epoch's running sums; a run killed
  after its 7th step resumes from step 2 of epoch 2 and ends where an uninterrupted run ends, with the
  same epoch records."""
  cfg, (x, y) = tiny_config(epochs=2), images()
  batcher = nasdata.Batcher(x, y, cfg.batch_size, seed=cfg.seed)
  tx = make_optimizer(cfg, batcher.steps_per_epoch)
  train_step = make_train_step(model_fn, tx, cfg, MEAN, STD)
  mesh = nasdata.data_mesh()

  def loop(workdir, **kwargs):
    run = Run(str(workdir), {"model": "mlp"}, steps_per_epoch=batcher.steps_per_epoch)
    state, start, history = run.resume(init_state(model_init, tx, cfg.seed))
    try:
      return start, run_loop(lambda s, b, e: train_step(s, *b, jnp.float32(0)), nasdata.replicate(state, mesh),
                      batcher.epoch, epochs=cfg.epochs, steps_per_epoch=batcher.steps_per_epoch,
                      end_epoch=lambda s, info, h: {"epoch": info.epoch + 1,
                                                    **{k: v / info.steps for k, v in info.sums.items()}},
                      mesh=mesh, start=start, history=history, run=run, checkpoint_every_steps=2,
                      show_progress=False, **kwargs)
    finally:
      run.close()

  assert batcher.steps_per_epoch == 4
  _, whole = loop(tmp_path / "whole")
  _, killed = loop(tmp_path / "killed", stop_after_steps=7)
  assert not killed.finished and (killed.position.epoch, killed.position.step) == (1, 3)
  start, resumed = loop(tmp_path / "killed")
  assert (start.epoch, start.step) == (1, 2) and set(start.sums) == {"loss", "accuracy", "grad_norm"}
  assert whole.finished and resumed.finished and resumed.position == Position(2)
  assert_same_state(whole.state, resumed.state)
  assert resumed.history == whole.history and len(whole.history) == 2


def test_a_stopping_record_ends_the_loop_and_a_resume_after_it(tmp_path):
  """An epoch record with a "stopped" reason (the one-shot search's anti-collapse rules) ends the loop;
  rerun from its checkpoint (killed before the caller saw the result), the loop runs nothing more."""
  cfg, (x, y) = tiny_config(epochs=3), images()
  batcher = nasdata.Batcher(x, y, cfg.batch_size, seed=cfg.seed)
  tx = make_optimizer(cfg, batcher.steps_per_epoch)
  train_step = make_train_step(model_fn, tx, cfg, MEAN, STD)
  mesh = nasdata.data_mesh()

  def loop():
    run = Run(str(tmp_path), {"model": "mlp"})
    state, start, history = run.resume(init_state(model_init, tx, cfg.seed))
    try:
      return run_loop(lambda s, b, e: train_step(s, *b, jnp.float32(0)), nasdata.replicate(state, mesh),
                      batcher.epoch, epochs=cfg.epochs, steps_per_epoch=batcher.steps_per_epoch,
                      end_epoch=lambda s, info, h: {"epoch": info.epoch + 1, "stopped": "enough"},
                      mesh=mesh, start=start, history=history, run=run, show_progress=False)
    finally:
      run.close()

  first = loop()
  assert first.finished and first.stopped == "enough" and first.position == Position(1)
  again = loop()
  assert again.finished and again.stopped == "enough" and again.position == Position(1)
  assert again.history == first.history and len(again.history) == 1
  assert_same_state(first.state, again.state)
