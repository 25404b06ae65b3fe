"""benchmarks/evolution_fashion_mnist.py: its options, its epoch budget, the morphism variant of regularized
evolution, and tiny end-to-end runs on synthetic 8x8 images: two arms in the default run; all three with
reuse, resume under a larger budget and a smaller budget's prefix in the slow one."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmark_scripts import load_benchmark
from nasjax.errors import NasjaxError
from nasjax.estimators import morphism as M
from nasjax.nn.chain_network import chain_network, init_variables
from nasjax.spaces import MacroSpace
from nasjax.strategies.evolution import regularized_evolution

SHAPE = (8, 8, 1)
SPACE = MacroSpace(3, kernel_sizes=(1, 3), filters=(4, 8), strides=(1, 2))


BENCH = load_benchmark("evolution_fashion_mnist")


# ---------------------------------------------------------------------------------------------- options
def test_options_defaults_and_space():
  args = BENCH.parse_args(["--subset", "400", "--layers", "3", "--filters", "4,8", "--kernels", "1,3",
                           "--arms", "morphism,low"])
  assert args.arms == ("morphism", "low") and args.valid == 100
  assert BENCH.make_space(args) == SPACE
  cfg = BENCH.search_config(args)
  # valid_fraction carves exactly --valid images off --subset + --valid.
  assert round(500 * cfg.valid_fraction) == 100 and cfg.epochs == args.low_epochs
  assert cfg.finetune_epochs == args.finetune_epochs and cfg.train_subset == 0
  assert BENCH.retrain_config(args).epochs == args.retrain_epochs


@pytest.mark.parametrize("argv, message", [
    (["--arms", "low,random"], "--arms"),
    (["--arms", "low,low"], "--arms"),
    (["--budget-epochs", "0"], "--budget-epochs"),
    (["--filters", "8,x"], "--filters"),
    (["--filters", "8,8"], "--filters"),
    (["--tournament", "6", "--population", "5"], "--tournament"),
    (["--threshold", "1.5"], "--threshold"),
    (["--min-epochs", "9", "--max-epochs", "8"], "--min-epochs"),
    (["--subset", "10", "--batch-size", "64"], "--subset"),
    (["--learning-rate", "nan"], "--learning-rate"),
])
def test_bad_options_are_refused(argv, message):
  with pytest.raises(NasjaxError, match=message):
    BENCH.parse_args(argv)


# ---------------------------------------------------------------------------------------------- budget
def test_meter_charges_until_the_budget_and_no_further():
  meter = BENCH.EpochMeter(5, spent=3)
  meter.charge()
  assert meter.remaining == 1
  with pytest.raises(BENCH.BudgetSpent):
    meter.charge(2)  # a charge that does not fit books nothing
  assert meter.spent == 4
  meter.charge()
  with pytest.raises(BENCH.BudgetSpent):
    meter.charge()
  assert (meter.spent, meter.remaining) == (5, 0)
  # Not a NasjaxError: search.run must let it through instead of treating it as a failed evaluation.
  assert not issubclass(BENCH.BudgetSpent, NasjaxError)


def _record(i, epochs, acc, failed=False, **extra):
  return {"index": i, "arch": [i], "failed": failed, "seconds": 1.0,
          "metrics": {"accuracy": acc, "epochs": epochs, **extra}}


def test_budget_prefix_and_best_record():
  records = [_record(0, 2, 0.5), _record(1, 2, float("nan"), failed=True), _record(2, 3, 0.7),
             _record(3, 1, 0.9, stopped_early=True), _record(4, 2, 0.6)]
  kept, used = BENCH.within_budget(records, 7)
  assert [r["index"] for r in kept] == [0, 1, 2] and used == 7
  kept, used = BENCH.within_budget(records, 6)
  assert [r["index"] for r in kept] == [0, 1] and used == 4
  # A stopped run's accuracy is a prediction: completed runs win; the failed one never does.
  assert BENCH.best_record(records)["index"] == 2
  assert BENCH.best_record([records[1], records[3]])["index"] == 3
  assert BENCH.best_record([records[1]]) is None


# ---------------------------------------------------------------------------------------------- morphism evolution
def _trained_like(arch, seed):
  net = chain_network(SPACE, arch, 2, SHAPE)
  shapes = jax.eval_shape(lambda k: init_variables(net, k), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(s.dtype), shapes)


def test_morphism_child_is_the_estimators_proposal():
  tiny = _dataset(32, 8, seed=0)
  est = M.MorphismEstimator(SPACE, tiny, BENCH.search_config(BENCH.parse_args(["--subset", "32", "--valid",
                                                                               "8", "--batch-size", "8"])))
  parents = [np.asarray(SPACE.sample(jax.random.key(i))) for i in range(12)]
  parents = [p for p in parents if M.applicable_morphs(SPACE, p, SHAPE)][:6]
  assert len(parents) == 6
  for i, parent in enumerate(parents):
    # The archive is public; trained-looking weights stand in for a training run.
    est.archive[tuple(parent.tolist())] = {"variables": _trained_like(parent, i), "accuracy": 0.5}
    key = jax.random.key(100 + i)
    child = BENCH.morphism_child(SPACE, key, parent, SHAPE, 2)
    np.testing.assert_array_equal(child, est.mutate(key, parent))
    assert M.find_morph(SPACE, parent, child, SHAPE) is not None


def test_morphism_child_falls_back_to_mutation_when_no_morphism_applies():
  # One width, no identity layers to deepen, no skips: nothing is function-preserving to add.
  space = MacroSpace(2, layer_types=("conv", "pool"), kernel_sizes=(1, 3), filters=(4,), strides=(1,),
                     skips=False)
  parent = space.from_string("conv(h3,w1,f4,s1)|pool(h1,w3,s1)")
  assert not M.applicable_morphs(space, parent, SHAPE)
  key = jax.random.key(3)
  np.testing.assert_array_equal(BENCH.morphism_child(space, key, parent, SHAPE, 2),
                                space.mutate(key, jnp.asarray(parent)))


def test_morphism_evolution_keeps_selection_and_mutates_by_morphism():
  pop, tour = 4, 2
  space = MacroSpace(4, kernel_sizes=(1, 3), filters=(4, 8, 12), strides=(1, 2))
  plain = BENCH.jitted(regularized_evolution(space, pop, tour))
  morph = BENCH.morphism_evolution(space, SHAPE, 2, pop, tour)
  # The same selection with the identity as mutation names the tournament winner of each round.
  winners = BENCH.jitted(regularized_evolution(BENCH._ParentsOnly(space), pop, tour))
  s_plain, s_morph = plain.init(jax.random.key(0)), morph.init(jax.random.key(0))
  seen, morphed = [], 0
  for i in range(10):
    key = jax.random.key(i)
    parent = np.asarray(winners.ask(s_morph, key)[0][0])
    a_plain, s_plain = plain.ask(s_plain, key)
    a_morph, s_morph = morph.ask(s_morph, key)
    child = np.asarray(a_morph[0])
    if i < pop:
      # The initial population is the same random sample as the plain strategy's.
      np.testing.assert_array_equal(a_morph, a_plain)
    elif M.applicable_morphs(space, parent, SHAPE):
      assert M.find_morph(space, parent, child, SHAPE) is not None
      morphed += 1
    else:
      fallback_key = jax.random.fold_in(jax.random.fold_in(key, BENCH.MORPH_STREAM), 0)
      np.testing.assert_array_equal(child, space.mutate(fallback_key, jnp.asarray(parent)))
    assert space.is_valid(jnp.asarray(child))
    # Later rounds are fitter; round 5 fails (NaN), which must never enter the population.
    fit = jnp.asarray([float("nan") if i == 5 else 0.1 * i], jnp.float32)
    s_plain = plain.tell(s_plain, a_plain, fit)
    s_morph = morph.tell(s_morph, a_morph, fit)
    seen.append(np.asarray(a_morph[0]))
  assert morphed >= 1 and int(s_morph["count"]) == 10 and int(s_morph["filled"]) == pop
  # Aging: the living members are the last four successful evaluations.
  alive = {tuple(a.tolist()) for a in np.asarray(s_morph["population"])}
  assert alive == {tuple(seen[i].tolist()) for i in (6, 7, 8, 9)}


# ---------------------------------------------------------------------------------------------- end to end
def _dataset(n_train, n_test, seed):
  from nasjax.data import Dataset
  x, y = _images(n_train, seed)
  xt, yt = _images(n_test, seed + 1)
  return Dataset("tiny", x[..., None], y, xt[..., None], yt, 2, (0.3,), (0.25,))


def _images(n, seed):
  rng = np.random.default_rng(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = rng.integers(0, 80, (n,) + SHAPE[:2]).astype(np.uint8)
  x[y == 1, 2:6, 2:6] += 150  # a bright square: learnable in a few steps
  return x, y


def _write_npz(path):
  x, y = _images(96, 0)
  xt, yt = _images(32, 1)
  np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)


def _argv(data, out, budget, arms, tournament="2"):
  return ["--data", str(data), "--arms", arms, "--subset", "48", "--valid", "16", "--budget-epochs", str(budget),
          "--low-epochs", "2", "--max-epochs", "3", "--min-epochs", "2", "--finetune-epochs", "1",
          "--retrain-epochs", "1", "--retrain-subset", "64", "--population", "2", "--tournament", tournament,
          "--layers", "3", "--filters", "4,8", "--kernels", "1,3", "--batch-size", "16", "--seed", "3",
          "--out", str(out), "--json", str(out) + ".json", "--quiet"]


def _check_arm(name, arm, records, budget):
  epochs = [r["metrics"]["epochs"] for r in records]
  # Exactly the budget: the completed evaluations plus the one the budget cut.
  assert arm["epochs_used"] == budget == sum(epochs) + arm["cut_epochs"], name
  assert arm["images_per_epoch"] == 48 // 16 * 16
  assert arm["images_trained"] == budget * arm["images_per_epoch"]
  assert arm["evaluations"] == len(records) >= 1
  best = max((r for r in records if not r["failed"]), key=lambda r: r["metrics"]["accuracy"])
  assert arm["best_arch"] == best["arch"] and arm["best_valid"] == best["metrics"]["accuracy"]
  assert SPACE.from_string(arm["best_genotype"]).tolist() == arm["best_arch"]
  assert 0.0 <= arm["test_accuracy"] <= 1.0 and arm["retrain_images"] == 64
  assert arm["seconds"] > 0


# XLA compile time dominates these tiny runs (one compile per candidate); both arms compared within a
# test compile the same way (conftest.py: fastest_compiles_for_test).
def test_smoke_low_and_morphism_spend_exactly_the_budget(tmp_path, capsys, fastest_compiles_for_test):
  data = tmp_path / "tiny.npz"
  _write_npz(data)
  out = tmp_path / "out"
  assert BENCH.main(_argv(data, out, 5, "low,morphism")) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed == json.loads((tmp_path / "out.json").read_text())
  arms = printed["arms"]
  logs = {a: BENCH.read_log(str(out / a / "search")) for a in arms}
  for name, arm in arms.items():
    _check_arm(name, arm, logs[name], 5)
  # Low fidelity: two from-scratch runs of 2 epochs; the third is cut after the 1 epoch left.
  assert [r["metrics"]["epochs"] for r in logs["low"]] == [2, 2] and arms["low"]["cut_epochs"] == 1
  # Same strategy and seed: the same initial population; and the morphism arm's from-scratch runs are the
  # low-fidelity protocol itself, so they give identical learning curves.
  assert [r["arch"] for r in logs["low"]] == arms["morphism"]["initial_archs"] == arms["low"]["initial_archs"]
  for low, morph in zip(logs["low"], logs["morphism"]):
    assert low["metrics"]["curve"] == morph["metrics"]["curve"]
  # Then a child one morphism away from its archived parent, fine-tuned for 1 epoch: 2 + 2 + 1 = 5.
  child = logs["morphism"][2]
  assert child["metrics"]["warm_start"] and child["metrics"]["epochs"] == 1
  assert M.find_morph(SPACE, np.asarray(child["metrics"]["parent"]), np.asarray(child["arch"]), SHAPE)
  assert child["metrics"]["parent"] in [r["arch"] for r in logs["morphism"][:2]]
  assert arms["morphism"]["warm_starts"] == 1 and arms["morphism"]["cut_epochs"] == 0


@pytest.mark.slow
def test_all_arms_resume_reuse_and_grow_the_budget(tmp_path, capsys, fastest_compiles_for_test):
  data = tmp_path / "tiny.npz"
  _write_npz(data)
  out = tmp_path / "out"
  assert BENCH.main(_argv(data, out, 5, "low,early,morphism")) == 0
  first = json.loads(capsys.readouterr().out)["arms"]
  logs = {a: BENCH.read_log(str(out / a / "search")) for a in first}
  for name, arm in first.items():
    _check_arm(name, arm, logs[name], 5)
  early = logs["early"]
  assert early[0]["metrics"]["epochs"] == 3 and not early[0]["metrics"]["stopped_early"]
  assert all(r["metrics"]["epochs"] >= 2 for r in early)  # no check before --min-epochs
  assert first["early"]["stopped_early"] == sum(r["metrics"]["stopped_early"] for r in early)
  # A rerun reuses every finished stage.
  assert BENCH.main(_argv(data, out, 5, "low,early,morphism")) == 0
  again = json.loads(capsys.readouterr().out)["arms"]
  assert again == first
  # A larger budget continues each logged search: the earlier evaluations are its prefix, unchanged,
  # and the resumed early-stopping and morphism estimators find their state again.
  assert BENCH.main(_argv(data, out, 8, "low,early,morphism")) == 0
  grown = json.loads(capsys.readouterr().out)["arms"]
  for name, arm in grown.items():
    records = BENCH.read_log(str(out / name / "search"))
    _check_arm(name, arm, records, 8)
    assert records[:len(logs[name])] == logs[name]
  # The same search run from scratch with the larger budget gives the same log (resume = uninterrupted).
  fresh = tmp_path / "fresh"
  assert BENCH.main(_argv(data, fresh, 8, "low,early,morphism")) == 0
  capsys.readouterr()
  for name in grown:
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
                        for r in rs]
    resumed = [dict(r, metrics={k: v for k, v in r["metrics"].items() if k != "cost_s"})
               for r in BENCH.read_log(str(out / name / "search"))]
    direct = [dict(r, metrics={k: v for k, v in r["metrics"].items() if k != "cost_s"})
              for r in BENCH.read_log(str(fresh / name / "search"))]
    assert strip(resumed) == strip(direct), name
  # A smaller budget reads the prefix of the longer log that fits, without training anything new.
  assert BENCH.main(_argv(data, out, 4, "low")) == 0
  small = json.loads(capsys.readouterr().out)["arms"]["low"]
  assert small["evaluations"] == 2 and small["epochs_used"] == 4 and small["cut_epochs"] == 0
