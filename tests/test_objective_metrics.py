"""Objectives beside accuracy: latency and peak activation memory of the forward pass, corruptions,
FGSM / PGD robustness, and merged estimators used as objectives."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import spaces
from nasjax.errors import NasjaxError
from nasjax.estimators.base import as_estimator
from nasjax.estimators.objective_metrics import (corrupt, fgsm, forward_estimator, peak_activation_bytes, pgd,
                                                 robustness_metric_names, robustness_metrics, with_metrics)
from nasjax.objectives import make_objectives, metric_names

pytestmark = pytest.mark.usefixtures("fastest_compiles")


def test_latency_and_memory_order_a_controlled_pair_of_nb201_networks():
  space = spaces.get_space("nb201")
  # CPU time, not wall time: the ordering must hold on a loaded test machine too.
  est = forward_estimator(space, input_shape=(16, 16, 3), channels=8, layers=1, batch_size=16, runs=5,
                          clock=time.process_time)
  heavy = est(space.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                                "nor_conv_3x3~2|"), jax.random.key(0))
  light = est(space.from_string("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"), jax.random.key(0))
  # Six 3x3 convolutions per cell against a cell that passes its input through: the same stem, stages
  # and head, so the difference is the cells' work.
  assert heavy["latency_s"] > light["latency_s"] > 0
  assert heavy["latency_batch_s"] > light["latency_batch_s"]
  assert heavy["peak_activation_bytes"] > light["peak_activation_bytes"] > 0
  assert heavy["peak_activation_source"] in ("xla_memory_analysis", "jaxpr_intermediates_sum")


def test_peak_activation_bytes_grows_with_the_batch():
  def f(w, x):
    return jnp.tanh(jnp.tanh(x @ w) @ w) @ w

  w = jnp.ones((64, 64))
  small, _ = peak_activation_bytes(f, w, jnp.ones((8, 64)))
  large, _ = peak_activation_bytes(f, w, jnp.ones((64, 64)))
  assert large > small >= 8 * 64 * 4  # at least the output


def test_corruptions_change_images_as_their_definitions_say():
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3), minval=0.2, maxval=0.8)
  noisy = corrupt(x, jax.random.key(1), "gaussian_noise", 5)
  assert float(jnp.std(noisy - x)) == pytest.approx(0.10, rel=0.1)
  blurred = corrupt(x, jax.random.key(1), "gaussian_blur", 3)
  assert float(jnp.std(blurred)) < float(jnp.std(x))
  assert float(jnp.mean(blurred)) == pytest.approx(float(jnp.mean(x)), abs=0.01)
  flat = corrupt(x, jax.random.key(1), "contrast", 5)
  np.testing.assert_allclose(flat - flat.mean(axis=(1, 2, 3), keepdims=True),
                             0.15 * (x - x.mean(axis=(1, 2, 3), keepdims=True)), atol=1e-6)
  for kind, severity, message in (("fog", 1, "unknown corruption"), ("contrast", 6, "severity")):
    with pytest.raises(NasjaxError, match=message):
      corrupt(x, jax.random.key(1), kind, severity)


def _linear_model():
  """Class = whether the mean brightness is above 0.5; a linear model with that rule."""
  def model_fn(variables, x, *, train, rng, drop_path_prob, extra):
    del train, rng, drop_path_prob, extra
    s = jnp.mean(x, axis=(1, 2, 3)) - variables["params"]["threshold"]
    return jnp.stack([-s, s], axis=1) * 100.0, None, {}
  return model_fn, {"params": {"threshold": jnp.float32(0.5)}}


def test_fgsm_and_pgd_flip_a_linear_classifier_within_epsilon_of_its_boundary():
  model_fn, variables = _linear_model()
  # Brightness 0.5 +- 0.02: every image is within epsilon = 0.03 of the boundary, none within 0.01.
  brightness = jnp.array([0.48, 0.52, 0.47, 0.53])
  images = jnp.broadcast_to(brightness[:, None, None, None], (4, 6, 6, 1))
  labels = jnp.array([0, 1, 0, 1])
  logits = lambda x: model_fn(variables, x, train=False, rng=None, drop_path_prob=0.0, extra=None)[0]
  assert float(jnp.mean(jnp.argmax(logits(fgsm(logits, images, labels, 0.04)), 1) == labels)) == 0.0
  assert float(jnp.mean(jnp.argmax(logits(fgsm(logits, images, labels, 0.01)), 1) == labels)) == 1.0
  adv = pgd(logits, images, labels, jax.random.key(0), 0.04, steps=5)
  assert float(jnp.max(jnp.abs(adv - images))) <= 0.04 + 1e-6
  assert float(jnp.mean(jnp.argmax(logits(adv), 1) == labels)) == 0.0
  out = jax.jit(lambda v, x, y, k: robustness_metrics(model_fn, v, x, y, k, epsilon=0.04, pgd_steps=3))(
      variables, images, labels, jax.random.key(1))
  assert float(out["accuracy_clean"]) == 1.0
  assert float(out["accuracy_fgsm"]) == 0.0 and float(out["accuracy_pgd"]) == 0.0
  # Contrast keeps each image's mean: the brightness rule is untouched by it.
  assert float(out["accuracy_contrast_s3"]) == 1.0
  assert set(out) >= {"accuracy_gaussian_noise_s3", "accuracy_gaussian_blur_s3", "accuracy_corrupted"}
  # The names a search checks its objectives against before training are exactly the keys produced.
  assert set(out) == set(robustness_metric_names(epsilon=0.04))
  with pytest.raises(NasjaxError, match="epsilon"):
    robustness_metrics(model_fn, variables, images, labels, jax.random.key(1), epsilon=2.0)


def test_merged_estimators_expose_every_metric_name_to_the_objective_check():
  table = as_estimator(lambda a, k: {"accuracy": jnp.sum(a) * 1.0}, jittable=True, name="table")
  device = as_estimator(lambda a, k: {"latency_s": jnp.float32(0.001), "accuracy": jnp.float32(-1)},
                        jittable=True, name="device")
  merged = with_metrics(table, device)
  assert merged.jittable
  out = jax.jit(merged)(jnp.array([1, 2]), jax.random.key(0))
  assert float(out["accuracy"]) == 3.0 and float(out["latency_s"]) == pytest.approx(0.001)  # first one wins
  assert set(metric_names(merged, 2)) == {"accuracy", "latency_s"}
  make_objectives("accuracy:max,latency_s:min").check_metrics(metric_names(merged, 2))
  with pytest.raises(NasjaxError, match="unknown objective 'peak_activation_bytes'"):
    make_objectives("accuracy,peak_activation_bytes:min").check_metrics(metric_names(merged, 2))


def test_peak_activation_estimate_where_the_backend_has_no_memory_analysis(monkeypatch):
  monkeypatch.setattr(jax.stages.Compiled, "memory_analysis", lambda self: None)

  def f(w, x):
    return jnp.tanh(jnp.tanh(x @ w) @ w) @ w

  # Five intermediate [8, 64] float32 values (three products, two tanh), no buffer reuse counted.
  assert peak_activation_bytes(f, jnp.ones((64, 64)), jnp.ones((8, 64))) == (5 * 8 * 64 * 4,
                                                                             "jaxpr_intermediates_sum")


def test_device_metrics_merged_with_a_table_are_known_before_anything_is_measured():
  space = spaces.get_space("nb201")
  table = as_estimator(lambda a, k: {"accuracy": jnp.sum(a) * 1.0, "latency_s": jnp.float32(0.01)}, jittable=True)
  merged = with_metrics(table, forward_estimator(space))
  assert not merged.jittable  # the device half runs on the host
  names = metric_names(merged, space.num_decisions)
  assert {"accuracy", "latency_s", "latency_batch_s", "peak_activation_bytes"} <= set(names)
  make_objectives("accuracy,peak_activation_bytes:min").check_metrics(names)
  with pytest.raises(NasjaxError, match="forward_estimator builds networks for the NB201 space"):
    forward_estimator(spaces.get_space("macro"))


@pytest.mark.slow
def test_robustness_of_trained_candidates_becomes_objectives(capsys, tmp_path, write_tiny_npz):
  """`nasjax search --robustness --objectives accuracy:max,accuracy_pgd:max`: each trained candidate is
  attacked and corrupted, the metrics are logged and the Pareto front is over them."""
  import json

  from nasjax import cli
  npz = write_tiny_npz(tmp_path / "tiny.npz", 96, 16)
  out = tmp_path / "run"
  rc = cli.main(["search", "--quiet", "--data", npz, "--strategy", "nsga2", "--strategy-option", "population_size=2",
                 "--num-archs", "2", "--epochs", "1", "--channels", "4", "--layers", "3", "--batch-size", "16",
                 "--train-subset", "64", "--robustness", "--robustness-images", "32", "--robustness-epsilon", "0.1",
                 "--objectives", "accuracy:max,accuracy_pgd:max", "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 0, err
  log = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
  assert len(log) == 2
  for record in log:
    m = record["metrics"]
    assert set(robustness_metric_names(epsilon=0.1)) <= set(m)
    assert all(0.0 <= m[k] <= 1.0 for k in robustness_metric_names(epsilon=0.1))
    corrupted = [m[f"accuracy_{kind}_s3"] for kind in ("gaussian_noise", "gaussian_blur", "contrast")]
    assert m["accuracy_corrupted"] == pytest.approx(np.mean(corrupted))
  result = json.loads((out / "result.json").read_text())
  assert result["objectives"]["objectives"][1].startswith("accuracy_pgd")
  assert all("accuracy_pgd" in e["objectives"] for e in result["pareto"]["front"])
