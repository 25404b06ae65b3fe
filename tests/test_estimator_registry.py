"""The estimator registry, entry by entry: specs, which space each works on, settings, fidelity levels, and
each estimator built and run once on tiny settings (8x8 images, small spaces, one or two candidates)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from nasjax import search, spaces, strategies
from nasjax.errors import NasjaxError
from nasjax.estimators.train import TrainingEstimator
from nasjax.estimators import registry as R
from nasjax.spaces import MacroSpace, NB201Space
from nasjax.spaces.cells import CellSpace

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")

# Cheap ops keep the compiles of tiny networks and supernets short (as in test_oneshot).
TINY_CELLS = CellSpace("tiny", ("skip_connect", "conv_1x1"), 2, True)
TINY_MACRO = MacroSpace(2, kernel_sizes=(1, 3), filters=(4, 8), strides=(1,))
NB201_ARCHS = np.asarray([[1, 2, 3, 0, 4, 2], [2, 2, 2, 2, 2, 2]], np.int32)


@pytest.fixture(scope="module")
def tiny_data(tiny_dataset):  # conftest.py: 96 8x8 grey images in 4 classes told apart by brightness
  return tiny_dataset


def tiny_training(cfg, **extra):
  cfg.update(dict(dict(epochs=1, batch_size=16, eval_batch_size=32, crop_padding=1), **extra))
  return cfg


# ---------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("text,kind,names", [
    ("train", "train", ()), ("early-stopping", "early_stopping", ()), ("morphism", "morphism", ()),
    ("weight_sharing", "weight_sharing", ()), ("proxy:synflow", "proxy", ("synflow",)),
    ("proxy:naswot, grad_norm", "proxy", ("naswot", "grad_norm")), ("tabular:t.csv", "tabular", ()),
])
def test_specs_parse(text, kind, names):
  spec = R.parse_spec(text)
  assert spec.kind == kind and spec.names == names
  assert R.parse_spec(str(spec)) == spec
  assert spec.fitness_key == ("score" if kind == "proxy" else "accuracy")


@pytest.mark.parametrize("text,message", [
    ("bogus", "unknown estimator"), ("", "spec"), ("proxy", "proxy needs a proxy name"),
    ("proxy:bogus", "unknown zero-cost proxy"), ("proxy:snip,snip", "repeat"), ("train:5", "takes no"),
])
def test_bad_specs_are_one_line_naming_what_is_accepted(text, message):
  with pytest.raises(NasjaxError, match=message) as e:
    R.parse_spec(text)
  assert "\n" not in str(e.value)


def test_tabular_alone_reads_the_environment(monkeypatch):
  monkeypatch.delenv(R.TABLE_ENV, raising=False)
  with pytest.raises(NasjaxError, match=R.TABLE_ENV):
    R.parse_spec("tabular")
  monkeypatch.setenv(R.TABLE_ENV, "/some/table.csv")
  assert R.parse_spec("tabular").path == "/some/table.csv"


# ---------------------------------------------------------------------------------------------- matrix
WORKS = {
    "darts": ("train", "early_stopping", "weight_sharing"),
    "nasnet": ("train", "early_stopping", "weight_sharing"),
    "enas_micro": ("train", "early_stopping", "weight_sharing"),
    "enas_macro": ("train", "weight_sharing", "proxy"),
    "nb201": ("train", "early_stopping", "weight_sharing", "proxy", "tabular"),
    "macro": ("train", "early_stopping", "morphism"),
    "nas_rl": ("train", "early_stopping", "morphism"),
    "nas_rl_strided": ("train", "early_stopping", "morphism"),
}
SPECS = {"proxy": "proxy:synflow", "tabular": "tabular:t.csv"}


@pytest.mark.parametrize("space_name", spaces.SPACE_NAMES)
@pytest.mark.parametrize("kind", R.KINDS)
def test_every_space_estimator_pair_works_or_is_refused_in_one_line(space_name, kind):
  space = spaces.get_space(space_name)
  spec = SPECS.get(kind, kind)
  if kind in WORKS[space_name]:
    assert R.check_combination(spec, space).kind == kind
    assert kind in R.estimators_for(space)
    R.estimator_config(spec, space)
  else:
    with pytest.raises(NasjaxError, match="accepts the spaces") as e:
      R.check_combination(spec, space)
    assert "\n" not in str(e.value)
    assert ("no estimator evaluates" in str(e.value)) == (not WORKS[space_name])


@pytest.mark.parametrize("kind", ["early_stopping", "weight_sharing", "proxy"])
def test_multi_fidelity_strategies_need_fidelity_levels(kind):
  space = spaces.get_space("nb201" if kind == "proxy" else "darts")
  for name in ("successive_halving", "hyperband"):
    with pytest.raises(NasjaxError, match="multi-fidelity.*train.*tabular"):
      R.check_combination(SPECS.get(kind, kind), space, strategy=strategies.get_strategy(name, space))


def test_executors_that_cannot_run_an_estimator_are_refused():
  darts = spaces.get_space("darts")
  with pytest.raises(NasjaxError, match="jittable"):
    R.check_combination("train", darts, executor="vmap")
  for kind in ("early_stopping", "morphism"):
    space = spaces.get_space("macro")
    with pytest.raises(NasjaxError, match="stateful"):
      R.check_combination(kind, space, executor="ray")
  assert R.check_combination("tabular:t.csv", NB201Space(), executor="vmap").jittable
  assert not R.parse_spec("train").jittable


def test_settings_hold_only_what_the_estimator_uses():
  nb201, macro, darts = NB201Space(), spaces.get_space("macro"), spaces.get_space("darts")
  train_nb201 = R.estimator_config("train", nb201)
  assert "cells_per_stage" in train_nb201 and "layers" not in train_nb201
  assert "channels" not in R.estimator_config("train", macro)
  assert {"threshold", "min_epochs", "check_every"} <= set(R.estimator_config("early_stopping", darts))
  assert "finetune_epochs" in R.estimator_config("morphism", macro)
  ws = R.estimator_config("weight_sharing", darts, preset="demo")
  assert ws.method == "spos" and "rank_samples" not in ws and ws.epochs < R.estimator_config(
      "weight_sharing", darts, preset="paper").epochs
  ws_nb201 = R.estimator_config("weight_sharing", nb201)
  assert ws_nb201.cells_per_stage == 1 and "layers" not in ws_nb201 and ws_nb201.space == "nb201"
  assert set(R.estimator_config("proxy:synflow", nb201)) == {"batch_size", "channels", "cells_per_stage", "seed"}
  assert set(R.estimator_config("tabular:t.csv", nb201)) == {"fitness", "seed_noise", "supplement", "seed"}


# ---------------------------------------------------------------------------------------------- fidelity
def test_geometric_epochs():
  assert [R.geometric_epochs(e) for e in (1, 2, 3, 9, 10, 27)] == [
      (1,), (1, 2), (1, 3), (1, 3, 9), (1, 3, 10), (1, 3, 9, 27)]
  assert R.geometric_epochs(8, eta=2) == (1, 2, 4, 8)


def test_fidelity_levels_of_each_estimator():
  cfg = R.estimator_config("train", spaces.get_space("darts"))
  cfg.epochs = 9
  assert R.fidelity_resources("train", cfg) == (1.0, 3.0, 9.0)
  assert R.fidelity_resources("train", cfg, resources=[2, 4]) == (2.0, 4.0)
  with pytest.raises(NasjaxError, match="epoch counts"):
    R.fidelity_resources("train", cfg, resources=[1.5, 3])
  cfg.epochs = 1
  with pytest.raises(NasjaxError, match="at least 2 fidelity levels"):
    R.fidelity_resources("train", cfg)
  tab = R.estimator_config("tabular:t.csv", NB201Space())
  with pytest.raises(NasjaxError, match="supplement"):
    R.fidelity_resources("tabular:t.csv", tab)
  tab.supplement = "s.csv"
  assert R.fidelity_resources("tabular:t.csv", tab) == (12.0, 200.0)
  with pytest.raises(NasjaxError, match="one fidelity level"):
    R.fidelity_resources("proxy:synflow", R.estimator_config("proxy:synflow", NB201Space()))


# ---------------------------------------------------------------------------------------------- builds
def run_batch(estimator, archs, executor="auto", fitness_key="accuracy"):
  keys = [jax.random.key(i) for i in range(len(archs))]
  return list(search.resolve_executor(executor, estimator).evaluate(estimator, np.asarray(archs), keys,
                                                                    fitness_key))


def test_train_on_a_cell_space_with_fidelity_levels(tiny_data):
  cfg = tiny_training(R.estimator_config("train", TINY_CELLS), channels=4, layers=1, epochs=2)
  est = R.build_estimator("train", TINY_CELLS, tiny_data, cfg, num_candidates=1, fidelity_resources=(1.0, 2.0))
  assert not est.jittable and est.num_fidelities == 2 and est.fidelity_epochs == (1, 2)
  metrics = est(TINY_CELLS.sample(jax.random.key(0)), jax.random.key(1), fidelity=0)
  assert metrics["epochs"] == 1 and 0.0 <= metrics["accuracy"] <= 1.0


def test_train_on_nb201_compiles_one_program_for_all_candidates(tiny_data):
  cfg = tiny_training(R.estimator_config("train", NB201Space()), channels=4)
  est = R.build_estimator("train", NB201Space(), tiny_data, cfg, num_candidates=2)
  assert isinstance(est, TrainingEstimator) and est.num_fidelities == 1
  outcomes = run_batch(est, NB201_ARCHS)
  assert all(not o.failed and 0.0 <= o.metrics["accuracy"] <= 1.0 for o in outcomes)
  assert len(est._programs) == 1  # the switch network: one train step for both architectures
  assert outcomes[0].metrics["params"] != outcomes[1].metrics["params"]


def test_train_on_a_macro_space(tiny_data):
  cfg = tiny_training(R.estimator_config("train", TINY_MACRO))
  est = R.build_estimator("train", TINY_MACRO, tiny_data, cfg, num_candidates=1, fidelity_resources=(1.0, 2.0))
  metrics = est(TINY_MACRO.sample(jax.random.key(3)), jax.random.key(1), fidelity=1)
  assert metrics["epochs"] == 2 and np.isfinite(metrics["accuracy"])


def test_early_stopping_restores_its_best_from_the_search_log(tiny_data, tmp_path):
  cfg = tiny_training(R.estimator_config("early_stopping", TINY_MACRO), epochs=2)
  est = R.build_estimator("early_stopping", TINY_MACRO, tiny_data, cfg, workdir=str(tmp_path))
  assert not est.jittable
  arch = TINY_MACRO.sample(jax.random.key(2))
  metrics = est(arch, jax.random.key(0))
  assert metrics["epochs"] == 2 and len(metrics["curve"]) == 2
  record = {"index": 0, "arch": arch.tolist(), "metrics": metrics, "failed": False}
  (tmp_path / "evaluations.jsonl").write_text(json.dumps(record) + "\n")
  resumed = R.build_estimator("early_stopping", TINY_MACRO, tiny_data, cfg, workdir=str(tmp_path))
  assert resumed.best_so_far == pytest.approx(est.best_so_far)


def test_early_stopping_on_a_cell_space_shares_the_supernet_program_in_a_long_search(tiny_data, monkeypatch):
  from nasjax.estimators import train as T
  built, make = [], T.make_train_step

  def counted(*args, **kwargs):
    built.append(make(*args, **kwargs))
    return built[-1]

  monkeypatch.setattr(T, "make_train_step", counted)
  cfg = tiny_training(R.estimator_config("early_stopping", TINY_CELLS), channels=4, layers=1)
  first, second = (TINY_CELLS.sample(k) for k in jax.random.split(jax.random.key(0), 2))
  # One candidate: its own network is cheaper, and each run builds its own program, even for the same cell
  # (that of test_train_on_a_cell_space_with_fidelity_levels, whose compiled program serves this one).
  for num_candidates, archs, programs in ((1, (TINY_CELLS.sample(jax.random.key(0)),) * 2, 2),
                                          (1000, (first, second), 1)):
    built.clear()
    est = R.build_estimator("early_stopping", TINY_CELLS, tiny_data, cfg, num_candidates=num_candidates)
    runs = [est(a, jax.random.key(1)) for a in archs]
    assert all(np.isfinite(r["accuracy"]) for r in runs)
    assert len(built) == programs
  assert est(first, jax.random.key(1))["curve"] == runs[0]["curve"]  # a run is a function of its key


def test_morphism_saves_its_archive_for_a_resumed_search(tiny_data, tmp_path):
  cfg = tiny_training(R.estimator_config("morphism", TINY_MACRO), epochs=1, crop_padding=0)
  est = R.build_estimator("morphism", TINY_MACRO, tiny_data, cfg, workdir=str(tmp_path))
  arch = TINY_MACRO.sample(jax.random.key(0))
  assert np.isfinite(est(arch, jax.random.key(1))["accuracy"])
  resumed = R.build_estimator("morphism", TINY_MACRO, tiny_data, cfg, workdir=str(tmp_path))
  assert list(resumed.estimator.archive) == [tuple(int(v) for v in arch)]


def test_proxy_is_built_for_nb201_and_vmapped_by_default(tiny_data):
  cfg = R.estimator_config("proxy:synflow,snip", NB201Space())
  cfg.update(batch_size=8, channels=4, cells_per_stage=1)
  est = R.build_estimator("proxy:synflow,snip", NB201Space(), tiny_data, cfg)
  assert est.jittable and est.name == "proxy:synflow,snip" and search.resolve_executor("auto", est).name == "vmap"
  # Scored (vmapped) in test_cli_search.py::test_proxy_search_on_nb201: compiling it here too would double
  # the time.


def test_tabular_lookup_and_its_fidelity_levels(tmp_path, nb201_table):
  path = nb201_table  # conftest.py: --shared-data, $NASJAX_SHARED_DATA or ../shared/data; skipped if absent
  cfg = R.estimator_config("tabular:" + path, NB201Space())
  est = R.build_estimator("tabular:" + path, NB201Space(), None, cfg)
  assert est.jittable and est.num_fidelities == 1
  outcomes = run_batch(est, NB201_ARCHS)
  assert all(50 < o.metrics["accuracy"] < 100 for o in outcomes)
  supplement = os.path.join(os.path.dirname(path), "nb201_supplement_12ep_unverified.csv")
  if os.path.isfile(supplement):
    cfg.supplement = supplement
    levels = R.fidelity_resources("tabular:" + path, cfg)
    assert R.build_estimator("tabular:" + path, NB201Space(), None, cfg,
                             fidelity_resources=levels).num_fidelities == 2
  identity = R.identity("tabular:" + path, cfg)
  assert identity["estimator"] == "tabular" and len(identity["table_sha256"]) == 64


def test_a_file_that_is_not_an_nb201_table_is_refused(tmp_path):
  bad = tmp_path / "bad.csv"
  bad.write_text("a,b\n1,2\n")
  cfg = R.estimator_config("tabular:" + str(bad), NB201Space())
  with pytest.raises(NasjaxError, match="missing column"):
    R.build_estimator("tabular:" + str(bad), NB201Space(), None, cfg)


def test_builds_refuse_what_cannot_work(tiny_data):
  cfg = R.estimator_config("train", NB201Space())
  with pytest.raises(NasjaxError, match="accepts the spaces"):
    R.build_estimator("tabular:t.csv", spaces.get_space("darts"), tiny_data, cfg)
  with pytest.raises(NasjaxError, match="multi-fidelity"):
    R.build_estimator("proxy:synflow", NB201Space(), tiny_data, cfg, fidelity_resources=(1.0, 2.0))
  with pytest.raises(NasjaxError, match="needs a data set"):
    R.build_estimator("train", NB201Space(), None, cfg)


def test_weight_sharing_trains_the_supernet_once_then_scores_under_shared_weights(tiny_data, tmp_path):
  cfg = R.estimator_config("weight_sharing", TINY_CELLS, preset="demo")
  cfg.update(epochs=1, batch_size=8, channels=4, layers=2, train_subset=0, eval_batch_size=32, crop_padding=1,
             rank_batches=1)
  est = R.build_estimator("weight_sharing", TINY_CELLS, tiny_data, cfg, workdir=str(tmp_path))
  assert est.jittable and (tmp_path / "supernet" / "checkpoints").is_dir()
  archs = np.stack([TINY_CELLS.sample(jax.random.key(i)) for i in range(2)])
  outcomes = run_batch(est, archs)  # auto -> vmap
  assert all(0.0 <= o.metrics["accuracy"] <= 1.0 for o in outcomes)
  serial = [est(a, jax.random.key(0))["accuracy"] for a in archs]
  np.testing.assert_allclose([o.metrics["accuracy"] for o in outcomes], serial, atol=1e-6)
  # A rebuild (a resumed search) restores the trained supernet instead of training again.
  again = R.build_estimator("weight_sharing", TINY_CELLS, tiny_data, cfg, workdir=str(tmp_path))
  np.testing.assert_allclose(float(again(archs[0], jax.random.key(0))["accuracy"]), serial[0], atol=1e-6)
