"""Learning-curve extrapolation (Domhan et al. 2015) and early termination.

All predictions use one horizon and one batch size, so the file compiles the fit twice (the first test
using each pays for it).
"""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from nasjax import NasjaxError
from nasjax.estimators import curves as C
from nasjax.search import run
from nasjax.spaces import NB201Space
from nasjax.strategies.random_search import random_search

HORIZON = 40
EPOCHS = np.arange(1, HORIZON + 1, dtype=np.float64)
FAMILIES = C.CurveModel().families


def pow3(c, a, alpha):
  return c - a * EPOCHS ** (-alpha)


def exp3(c, a, b):
  return c - np.exp(-a * EPOCHS + b)


def test_recovers_pow3_parameters_and_final_value_from_30_percent():
  truth = pow3(0.9, 0.6, 0.7)
  pred = C.predict(truth[:12], HORIZON)
  theta = np.asarray(pred.params[FAMILIES.index("pow3")])
  np.testing.assert_allclose([theta[0], theta[1], np.exp(theta[2])], [0.9, 0.6, 0.7], rtol=1e-2)
  assert bool(pred.ok) and not bool(pred.failed)
  assert abs(float(pred.mean) - truth[-1]) < 0.005
  lo, hi = C.predictive_interval(pred, 0.9)
  assert lo <= truth[-1] <= hi and hi - lo < 0.05
  # The fitted family reproduces the hand-computed curve at the horizon.
  np.testing.assert_allclose(C.family_value("pow3", theta, HORIZON), truth[-1], atol=1e-4)


def test_extrapolates_an_exponential_curve():
  truth = exp3(0.8, 0.1, math.log(0.6))
  pred = C.predict(truth[:12], HORIZON)
  assert abs(float(pred.mean) - truth[-1]) < 0.02
  assert C.probability_to_beat(truth[:12], truth[-1] - 0.05, HORIZON) > 0.9
  assert C.probability_to_beat(truth[:12], truth[-1] + 0.05, HORIZON) < 0.1


@pytest.fixture(scope="module")
def noisy_batch():
  rng = np.random.default_rng(0)
  truths, observed = [], []
  for i in range(16):
    if i % 2:
      clean = pow3(rng.uniform(0.75, 0.95), rng.uniform(0.3, 0.6), rng.uniform(0.5, 1.2))
    else:
      clean = exp3(rng.uniform(0.75, 0.95), rng.uniform(0.05, 0.2), math.log(rng.uniform(0.3, 0.6)))
    truths.append(clean[-1])
    observed.append(clean + rng.normal(0, 0.01, HORIZON))
  values = np.asarray(observed, np.float32)
  counts = np.asarray([12 + (i % 4) * 4 for i in range(16)], np.int32)  # 30% .. 60% observed
  return values, counts, np.asarray(truths), C.predict_batch(values, counts, HORIZON)


def test_predictive_interval_covers_noisy_truth_most_of_the_time(noisy_batch):
  _, _, truths, pred = noisy_batch
  lo, hi = C.predictive_interval(pred, 0.9)
  covered = (np.asarray(lo) <= truths) & (truths <= np.asarray(hi))
  assert covered.sum() >= 13, (covered, np.asarray(pred.mean), truths)
  # Informative, not vacuous: the intervals are narrower than a third of the accuracy range.
  assert np.median(np.asarray(hi) - np.asarray(lo)) < 0.33
  weights = np.asarray(pred.weights)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
  assert np.all(weights[~np.asarray(pred.valid)] == 0)


def test_vmap_over_curves_equals_a_loop(noisy_batch):
  values, counts, _, pred = noisy_batch
  for i in (0, 5, 10, 15):
    single = C.predict(values[i, :counts[i]], HORIZON)
    np.testing.assert_allclose(float(single.mean), float(pred.mean[i]), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(single.valid), np.asarray(pred.valid[i]))
    np.testing.assert_allclose(np.asarray(single.weights), np.asarray(pred.weights[i]), atol=1e-3)


def test_nan_in_a_partial_curve_is_a_failed_run_not_a_crash(noisy_batch):
  curve = [0.3, 0.45, float("nan"), 0.6, 0.62]
  pred = C.predict(curve, HORIZON)
  assert bool(pred.failed) and not bool(pred.ok) and np.isnan(float(pred.mean))
  assert C.probability_to_beat(curve, 0.1, HORIZON) == 0.0
  assert C.probability_to_beat([0.3, float("inf"), 0.5], 0.1, HORIZON) == 0.0
  # In a batch, a NaN row fails alone.
  values, counts, _, pred_ok = noisy_batch
  values = values.copy()
  values[3, 2] = np.nan
  values[7, counts[7] + 1] = np.nan  # after the observed part: ignored
  pred = C.predict_batch(values, counts, HORIZON)
  assert bool(pred.failed[3]) and not bool(np.any(np.delete(np.asarray(pred.failed), 3)))
  np.testing.assert_allclose(float(pred.mean[7]), float(pred_ok.mean[7]), atol=1e-6)


def test_too_short_a_curve_is_uninformative():
  pred = C.predict([0.3, 0.4, 0.45], HORIZON)  # every family needs p + 1 >= 4 points
  assert not bool(pred.ok) and not bool(pred.failed)
  assert math.isnan(C.probability_to_beat([0.3, 0.4, 0.45], 0.5, HORIZON))


def _replay(curve):
  def epoch_fn(state, epoch):
    return state + 1, curve[epoch]
  return epoch_fn


def test_termination_stops_a_bad_run_and_keeps_a_good_one():
  bad = exp3(0.5, 0.15, math.log(0.4))
  good = exp3(0.95, 0.1, math.log(0.8))
  stopped = C.early_stopping_trainer(_replay(bad), 0, epochs=HORIZON, best_so_far=0.85, min_epochs=8)
  assert stopped.stopped_early and not stopped.failed
  assert stopped.epochs_run == 8 and stopped.state == 8 and stopped.epochs_saved == HORIZON - 8
  assert stopped.probability < 0.05 and abs(stopped.predicted_final - bad[-1]) < 0.05
  kept = C.early_stopping_trainer(_replay(good), 0, epochs=HORIZON, best_so_far=0.85, min_epochs=8)
  assert not kept.stopped_early and kept.epochs_run == HORIZON and kept.epochs_saved == 0
  assert kept.curve == [float(v) for v in good]
  # Nothing to beat yet: never stops.
  first = C.early_stopping_trainer(_replay(bad), 0, epochs=HORIZON, best_so_far=None, min_epochs=8)
  assert first.epochs_run == HORIZON and first.probability is None
  # A diverged epoch ends the run as failed.
  broken = list(good[:5]) + [float("nan")] + list(good[6:])
  failed = C.early_stopping_trainer(_replay(broken), 0, epochs=HORIZON, best_so_far=0.85, min_epochs=8)
  assert failed.failed and failed.epochs_run == 6 and not failed.stopped_early


def test_check_every_spaces_the_checks():
  bad = exp3(0.5, 0.15, math.log(0.4))
  result = C.early_stopping_trainer(_replay(bad), 0, epochs=HORIZON, best_so_far=0.85, min_epochs=8,
                                    check_every=5)
  assert result.epochs_run == 8  # the first check is at min_epochs
  result = C.early_stopping_trainer(_replay(bad), 0, epochs=HORIZON, best_so_far=0.85, min_epochs=3,
                                    check_every=5)
  assert result.epochs_run in (8, 13) and (result.epochs_run - 3) % 5 == 0


class _CurveRuns:
  """make_run for the estimator: an architecture's first decision picks its learning curve."""
  curves = {0: exp3(0.9, 0.1, math.log(0.7)), 1: exp3(0.5, 0.15, math.log(0.4)),
            2: exp3(0.93, 0.1, math.log(0.75)), 3: exp3(0.55, 0.1, math.log(0.4)), 4: exp3(0.6, 0.1, math.log(0.4))}

  def __call__(self, arch, key):
    del key
    return 0, _replay(self.curves[int(arch[0])])


def test_estimator_keeps_the_best_so_far_and_counts_compute():
  est = C.EarlyStoppingEstimator(_CurveRuns(), HORIZON, min_epochs=8)
  good = est(np.asarray([0, 0]), jax.random.key(0))
  assert not good["stopped_early"] and good["epochs"] == HORIZON and math.isnan(good["best_so_far"])
  assert est.best_so_far == pytest.approx(_CurveRuns.curves[0][-1])
  bad = est(np.asarray([1, 0]), jax.random.key(1))
  assert bad["stopped_early"] and bad["epochs"] == 8 and bad["accuracy"] < est.best_so_far
  assert bad["observed_accuracy"] == pytest.approx(_CurveRuns.curves[1][7])
  assert est.best_so_far == pytest.approx(_CurveRuns.curves[0][-1])  # a stopped run never sets it
  better = est(np.asarray([2, 0]), jax.random.key(2))
  assert not better["stopped_early"] and est.best_so_far == pytest.approx(_CurveRuns.curves[2][-1])
  assert est.epochs_used == 2 * HORIZON + 8 and est.epochs_saved == HORIZON - 8
  assert json.loads(json.dumps(bad))["curve"] == bad["curve"]


def test_estimator_resumes_from_the_search_log(tmp_path):
  space = NB201Space()
  make_run = lambda arch, key: (0, _replay(_CurveRuns.curves[int(arch[0])]))  # noqa: E731
  full = C.EarlyStoppingEstimator(make_run, HORIZON, min_epochs=8)
  result = run(random_search(space), full, 6, jax.random.key(0), workdir=str(tmp_path), show_progress=False)
  assert sum(r["metrics"]["stopped_early"] for r in result["history"]) >= 1
  resumed = C.EarlyStoppingEstimator(make_run, HORIZON, min_epochs=8)
  resumed.restore(str(tmp_path))
  assert (resumed.best_so_far, resumed.epochs_used, resumed.epochs_saved) == (
      pytest.approx(full.best_so_far), full.epochs_used, full.epochs_saved)
  # Restoring from the first three records gives the state after three calls: replay the rest and match.
  partial = C.EarlyStoppingEstimator(make_run, HORIZON, min_epochs=8)
  partial.restore(result["history"][:3])
  for record in result["history"][3:]:
    metrics = partial(np.asarray(record["arch"]), jax.random.key(0))
    assert metrics["epochs"] == record["metrics"]["epochs"]
    assert metrics["accuracy"] == pytest.approx(record["metrics"]["accuracy"], nan_ok=True)
  assert partial.best_so_far == pytest.approx(full.best_so_far)


def test_bad_settings_are_clear_errors(tmp_path):
  with pytest.raises(NasjaxError, match="families must be distinct names"):
    C.CurveModel(families=("pow3", "spline"))
  with pytest.raises(NasjaxError, match="value_range"):
    C.CurveModel(value_range=(1.0, 0.0))
  with pytest.raises(NasjaxError, match="more than the horizon"):
    C.predict(np.zeros(HORIZON + 1), HORIZON)
  with pytest.raises(NasjaxError, match="at least one observed epoch"):
    C.predict([], HORIZON)
  with pytest.raises(NasjaxError, match="threshold must be a probability"):
    C.early_stopping_trainer(_replay([0.5]), 0, epochs=1, best_so_far=0.5, threshold=1.5)
  with pytest.raises(NasjaxError, match="unknown curve family"):
    C.family_value("linear", np.zeros(4), 1.0)
  with pytest.raises(NasjaxError, match="no search log"):
    C.EarlyStoppingEstimator(_CurveRuns(), HORIZON).restore(str(tmp_path / "nowhere.jsonl"))
  with pytest.raises(NasjaxError, match="not written by an EarlyStoppingEstimator"):
    C.EarlyStoppingEstimator(_CurveRuns(), HORIZON).restore([{"metrics": {"accuracy": 0.5}}])
