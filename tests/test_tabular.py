"""The NAS-Bench-201 tabular estimator, on synthetic tables with the real schema (never the shared file)."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmark_scripts import load_benchmark
from nasjax.errors import NasjaxError
from nasjax.estimators.tabular import DATASETS, NB201TabularEstimator, load_nb201_table, nb201_estimator
from nasjax.spaces.nb201 import NB201_OPS, NUM_CELLS, NB201Space

# The published file's 41 columns, in its order.
HEADER = [
    "arch_index", "arch_str", "unique_str", "ops_code", "cifar10_test_acc", "cifar100_test_acc",
    "imagenet16_test_acc", "c10valid_train_loss", "c10valid_train_acc", "c10valid_valid_loss",
    "c10valid_valid_acc", "c10valid_test_loss", "c10valid_test_acc", "c10valid_train_time_s",
    "c10valid_valid_time_s", "c10valid_test_time_s", "c10valid_valid_acc_seed0", "c10valid_valid_acc_seed1",
    "c10valid_valid_acc_seed2", "c10valid_n_seeds", "c10valid_params_mb", "c10valid_params_seed_disagree",
    "c10valid_latency_s", "c100_valid_acc_mean", "c100_valid_acc_seed0", "c100_valid_acc_seed1",
    "c100_valid_acc_seed2", "c100_n_seeds", "c100_params_mb", "c100_params_seed_disagree", "c100_latency_s",
    "c100_train_time_s", "in16_valid_acc_mean", "in16_valid_acc_seed0", "in16_valid_acc_seed1",
    "in16_valid_acc_seed2", "in16_n_seeds", "in16_params_mb", "in16_params_seed_disagree", "in16_latency_s",
    "in16_train_time_s"]
SUPPLEMENT_HEADER = ["arch_index", "arch_str", "cifar10_test_acc_12ep", "cifar100_test_acc_12ep",
                     "imagenet16_test_acc_12ep", "cifar10_test_acc_200ep_oneseed",
                     "cifar100_test_acc_200ep_oneseed", "imagenet16_test_acc_200ep_oneseed"]
FAILED = (7, 4321, 15000)  # our indices of cells whose training "failed" (NaN accuracies)
MEAN_OF = {"c10valid": "c10valid_valid_acc", "c100": "c100_valid_acc_mean", "in16": "in16_valid_acc_mean"}


# XLA's optimisation passes would dominate these tests' time; lookups do not depend on them.
pytestmark = pytest.mark.usefixtures("fastest_compiles")


def arch_of(index: int) -> np.ndarray:
  return (index // 5 ** np.arange(5, -1, -1)) % 5


def arch_string(arch) -> str:
  ops = [NB201_OPS[int(v)] for v in arch]
  return (f"|{ops[0]}~0|+|{ops[1]}~0|{ops[2]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|")


def synthetic(seed: int = 0):
  """Columns indexed by OUR index, and the file rows in a shuffled (official-like) order."""
  rng = np.random.default_rng(seed)
  n = NUM_CELLS
  cols: dict[str, np.ndarray] = {}
  for name in HEADER:
    if name not in ("arch_index", "arch_str", "unique_str", "ops_code"):
      cols[name] = np.round(rng.uniform(1.0, 95.0, n), 6)
  for prefix, mean in MEAN_OF.items():
    seeds = np.round(rng.uniform(5.0, 95.0, (n, 3)), 6)
    two = rng.random(n) < 0.5
    seeds[two, 2] = np.nan
    seeds[list(FAILED)] = np.nan
    for s in range(3):
      cols[f"{prefix}_valid_acc_seed{s}"] = seeds[:, s]
    count = np.isfinite(seeds).sum(axis=1)
    cols[f"{prefix}_n_seeds"] = count.astype(np.float64)
    with np.errstate(invalid="ignore"):
      cols[mean] = np.where(count > 0, np.nansum(seeds, axis=1) / np.maximum(count, 1), np.nan)
    cols[f"{prefix}_params_seed_disagree"] = (rng.random(n) < 0.1).astype(np.float64)
  for name in ("cifar10_test_acc", "cifar100_test_acc", "imagenet16_test_acc"):
    cols[name][list(FAILED)] = np.nan
  sup = {name: np.round(rng.uniform(1.0, 90.0, n), 6) for name in SUPPLEMENT_HEADER[2:]}
  nats = rng.permutation(n)           # the "official" index of each of our cells
  order = np.argsort(nats)            # file row r holds our cell order[r]

  def fmt(v):
    return "" if np.isnan(v) else repr(float(v))

  rows, sup_rows = [], []
  for i in order:
    a = arch_of(int(i))
    row = []
    for name in HEADER:
      if name == "arch_index":
        row.append(str(int(nats[i])))
      elif name == "arch_str":
        row.append(arch_string(a))
      elif name == "unique_str":
        row.append("x")
      elif name == "ops_code":
        row.append("".join(str(int(v)) for v in a))
      elif name.endswith("seed_disagree"):
        row.append("True" if cols[name][i] else "False")
      elif name.endswith("n_seeds"):
        row.append(str(int(cols[name][i])))
      else:
        row.append(fmt(cols[name][i]))
    rows.append(row)
    sup_rows.append([str(int(nats[i])), arch_string(a)] + [fmt(sup[c][i]) for c in SUPPLEMENT_HEADER[2:]])
  return cols, sup, nats, rows, sup_rows


def write(path, header, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  cols, sup, nats, rows, sup_rows = synthetic()
  d = tmp_path_factory.mktemp("nb201")
  path = write(d / "table.csv", HEADER, rows)
  sup_path = write(d / "supplement.csv", SUPPLEMENT_HEADER, sup_rows)
  table = load_nb201_table(path, sup_path)
  return {"cols": cols, "sup": sup, "nats": nats, "rows": rows, "sup_rows": sup_rows, "path": path,
          "sup_path": sup_path, "table": table, "dir": d}


def random_indices(seed: int, count: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, NUM_CELLS, count)


# ------------------------------------------------------------------------------------------ loading
def test_rows_are_reordered_to_our_index(data):
  table = data["table"]
  for i in list(random_indices(1, 40)) + list(FAILED):
    assert table.arch_strs[i] == arch_string(arch_of(i))
    assert table.nats_index[i] == data["nats"][i]
    for name, col in data["cols"].items():
      np.testing.assert_array_equal(table.column(name)[i], col[i], err_msg=name)
    for name, col in data["sup"].items():
      np.testing.assert_array_equal(table.column(name)[i], col[i], err_msg=name)
  # The host-side row accessor agrees, by encoding and by string.
  i = 1234
  row = table.row(arch_of(i))
  by_string = table.row(arch_string(arch_of(i)))
  assert row.keys() == by_string.keys()
  np.testing.assert_array_equal(list(row.values()), list(by_string.values()))
  assert row["c10valid_valid_acc"] == data["cols"]["c10valid_valid_acc"][i]
  assert row["cifar100_test_acc_12ep"] == data["sup"]["cifar100_test_acc_12ep"][i]


def test_optimum_matches_numpy(data):
  table, cols = data["table"], data["cols"]
  for name, d in DATASETS.items():
    opt = table.optimum(name)
    i = int(np.nanargmax(cols[d.fitness]))
    assert opt["best_fitness"] == cols[d.fitness][i]
    assert opt["test_of_best_fitness"] == cols[d.test][i]
    assert opt["arch_of_best_fitness"] == arch_string(arch_of(i))
    assert opt["best_test"] == np.nanmax(cols[d.test])


def small_file(data, name, header=None, rows=None, count=20):
  return write(data["dir"] / name, header or HEADER, rows if rows is not None else data["rows"][:count])


def test_missing_column(data):
  drop = HEADER.index("c100_train_time_s")
  header = HEADER[:drop] + HEADER[drop + 1:]
  rows = [r[:drop] + r[drop + 1:] for r in data["rows"][:5]]
  with pytest.raises(NasjaxError, match="missing column.*c100_train_time_s"):
    load_nb201_table(small_file(data, "missing.csv", header, rows))


def test_wrong_row_count(data):
  with pytest.raises(NasjaxError, match="100 data rows; an NB201 table has exactly 15625"):
    load_nb201_table(small_file(data, "short.csv", count=100))
  rows = data["rows"] + [data["rows"][0]]
  with pytest.raises(NasjaxError, match="more than 15625 data rows"):
    load_nb201_table(small_file(data, "long.csv", rows=rows))


def test_bad_arch_string(data):
  rows = [list(r) for r in data["rows"][:10]]
  rows[3][HEADER.index("arch_str")] = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
  with pytest.raises(NasjaxError, match=r"line 5: bad arch_str: nb201: a cell string has 3 nodes"):
    load_nb201_table(small_file(data, "badarch.csv", rows=rows))
  rows[3][HEADER.index("arch_str")] = "|conv9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  with pytest.raises(NasjaxError, match=r"line 5: bad arch_str: .*unknown op 'conv9x9'"):
    load_nb201_table(small_file(data, "badop.csv", rows=rows))


def test_duplicated_arch(data):
  rows = [list(r) for r in data["rows"][:10]]
  rows[6] = list(rows[1])
  with pytest.raises(NasjaxError, match=r"appears twice \(lines 3 and 8\)"):
    load_nb201_table(small_file(data, "dup.csv", rows=rows))


def test_non_numeric_value_and_wrong_ops_code(data):
  rows = [list(r) for r in data["rows"][:10]]
  rows[2][HEADER.index("cifar10_test_acc")] = "ninety"
  with pytest.raises(NasjaxError, match=r"line 4: column 'cifar10_test_acc' must be a number"):
    load_nb201_table(small_file(data, "text.csv", rows=rows))
  rows = [list(r) for r in data["rows"][:10]]
  code = rows[2][HEADER.index("ops_code")]
  rows[2][HEADER.index("ops_code")] = code[::-1] if code != code[::-1] else "000000x"
  with pytest.raises(NasjaxError, match=r"line 4: ops_code"):
    load_nb201_table(small_file(data, "code.csv", rows=rows))
  rows = [list(r) for r in data["rows"][:10]]
  rows[4] = rows[4][:-1]
  with pytest.raises(NasjaxError, match=r"line 6: 40 fields, but the header has 41"):
    load_nb201_table(small_file(data, "ragged.csv", rows=rows))


def test_missing_file_and_empty_file(data):
  with pytest.raises(NasjaxError, match="does not exist"):
    load_nb201_table(data["dir"] / "nope.csv")
  (data["dir"] / "empty.csv").write_text("")
  with pytest.raises(NasjaxError, match="is empty"):
    load_nb201_table(data["dir"] / "empty.csv")
  with pytest.raises(NasjaxError, match="missing column.*cifar10_test_acc_12ep"):
    load_nb201_table(data["path"], small_file(data, "sup.csv", ["arch_str"], [[r[1]] for r in data["rows"]]))


def test_seed_columns_must_agree_with_their_mean(data):
  rows = [list(r) for r in data["rows"]]
  col = HEADER.index("c100_n_seeds")
  victim = next(r for r in rows if r[col] == "3")
  victim[col] = "2"
  with pytest.raises(NasjaxError, match="c100_n_seeds differs from the number"):
    load_nb201_table(small_file(data, "seeds.csv", rows=rows))


def test_unknown_fitness_or_test_column(data):
  with pytest.raises(NasjaxError, match="unknown NB201 fitness 'cifar10_test_acc'; accepted"):
    NB201TabularEstimator(data["table"], "cifar10_test_acc")
  with pytest.raises(NasjaxError, match="no column 'cifar10_tset_acc'"):
    NB201TabularEstimator(data["table"], test="cifar10_tset_acc")


# ------------------------------------------------------------------------------------------ estimator
def sample_archs(count: int, seed: int) -> jax.Array:
  space = NB201Space()
  return jax.vmap(space.sample)(jax.random.split(jax.random.key(seed), count))


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "imagenet16"])
def test_lookup_equals_table_row_under_jit_and_vmap(data, dataset):
  d = DATASETS[dataset]
  cols = data["cols"]
  est = NB201TabularEstimator(data["table"], d.fitness)
  archs = sample_archs(32, seed=3)
  out = jax.jit(jax.vmap(est))(archs, jax.random.split(jax.random.key(0), 32))
  index = np.asarray(archs) @ (5 ** np.arange(5, -1, -1))
  f32 = np.float32
  np.testing.assert_array_equal(out["index"], index)
  np.testing.assert_array_equal(out["accuracy"], cols[d.fitness][index].astype(f32))
  np.testing.assert_array_equal(out["test_accuracy"], cols[d.test][index].astype(f32))
  np.testing.assert_array_equal(out["params"], np.round(cols[f"{d.prefix}_params_mb"][index] * 1e6).astype(f32))
  np.testing.assert_allclose(out["latency_ms"], cols[f"{d.prefix}_latency_s"][index] * 1e3, rtol=1e-6)
  np.testing.assert_array_equal(out["cost"], cols[f"{d.prefix}_train_time_s"][index].astype(f32))
  np.testing.assert_array_equal(out["budget"], np.ones(32, f32))
  np.testing.assert_array_equal(out["epochs"], np.full(32, 200))
  np.testing.assert_array_equal(out["fidelity"], np.full(32, 1))
  assert not np.any(out["failed"])
  # One architecture, un-jitted, gives the same numbers as the batch.
  one = est(archs[5], jax.random.key(9))
  for k in out:
    np.testing.assert_array_equal(one[k], out[k][5], err_msg=k)


def test_low_fidelity_level_reads_the_supplement(data):
  est = NB201TabularEstimator(data["table"], "cifar100")
  assert est.fidelity_epochs == (12, 200) and est.num_fidelities == 2
  archs = sample_archs(16, seed=4)
  index = np.asarray(archs) @ (5 ** np.arange(5, -1, -1))
  keys = jax.random.split(jax.random.key(1), 16)
  fid = jnp.asarray([0, 1] * 8, jnp.int32)
  out = jax.jit(jax.vmap(lambda a, k, f: est(a, k, fidelity=f)))(archs, keys, fid)
  low = np.asarray(fid) == 0
  want = np.where(low, data["sup"]["cifar100_test_acc_12ep"][index], data["cols"]["c100_valid_acc_mean"][index])
  np.testing.assert_array_equal(out["accuracy"], want.astype(np.float32))
  np.testing.assert_array_equal(out["epochs"], np.where(low, 12, 200))
  np.testing.assert_allclose(out["budget"], np.where(low, 0.06, 1.0), rtol=1e-7)
  train = data["cols"]["c100_train_time_s"][index]
  np.testing.assert_allclose(out["cost"], np.where(low, train * 12 / 200, train), rtol=1e-6)
  # The reported test value does not depend on the fidelity the search paid for.
  np.testing.assert_array_equal(out["test_accuracy"], data["cols"]["cifar100_test_acc"][index].astype(np.float32))
  # Out-of-range levels are clipped (a jitted function cannot raise), and reported as clipped.
  hi = est(archs[0], keys[0], fidelity=7)
  assert int(hi["fidelity"]) == 1
  np.testing.assert_array_equal(hi["accuracy"], np.float32(data["cols"]["c100_valid_acc_mean"][index[0]]))
  # Without the supplement there is a single, full level.
  plain = NB201TabularEstimator(data["table"], "cifar100", low_fidelity=False)
  assert plain.fidelity_epochs == (200,)
  np.testing.assert_array_equal(plain(archs[0], keys[0], fidelity=0)["accuracy"],
                                np.float32(data["cols"]["c100_valid_acc_mean"][index[0]]))


def test_seed_noise_draws_the_trained_seeds(data):
  cols = data["cols"]
  est = NB201TabularEstimator(data["table"], seed_noise=True)
  n = cols["c10valid_n_seeds"]
  three = int(np.nonzero(n == 3)[0][0])
  two = int(np.nonzero(n == 2)[0][0])
  keys = jax.random.split(jax.random.key(5), 64)
  draw = jax.jit(jax.vmap(est, in_axes=(None, 0)))
  for index, count in ((three, 3), (two, 2)):
    acc = np.asarray(draw(jnp.asarray(arch_of(index), jnp.int32), keys)["accuracy"])
    seeds = {np.float32(cols[f"c10valid_valid_acc_seed{s}"][index]) for s in range(count)}
    assert set(acc.tolist()) == {float(v) for v in seeds}  # every trained seed, and nothing else
  # Same key, same draw; the mean estimator ignores the key.
  a = jnp.asarray(arch_of(three), jnp.int32)
  assert float(est(a, keys[0])["accuracy"]) == float(est(a, keys[0])["accuracy"])
  mean = NB201TabularEstimator(data["table"])
  assert float(mean(a, keys[0])["accuracy"]) == float(mean(a, keys[1])["accuracy"])
  assert float(mean(a, keys[0])["accuracy"]) == np.float32(cols["c10valid_valid_acc"][three])


@pytest.mark.parametrize("seed_noise", [False, True])
def test_failed_row_is_reported_as_failed(data, seed_noise):
  est = NB201TabularEstimator(data["table"], seed_noise=seed_noise)
  archs = jnp.asarray(np.stack([arch_of(i) for i in FAILED + (0,)]), jnp.int32)
  out = jax.jit(jax.vmap(est))(archs, jax.random.split(jax.random.key(2), 4))
  np.testing.assert_array_equal(out["failed"], [True, True, True, False])
  assert np.all(np.isnan(out["accuracy"][:3])) and np.isfinite(out["accuracy"][3])
  # An encoding outside the space is a failed query, not a clamped lookup of some other row.
  bad = est(jnp.asarray([0, 1, 2, 5, 0, 0], jnp.int32), jax.random.key(0))
  assert bool(bad["failed"]) and np.isnan(bad["accuracy"])
  # The table's optimum never is a failed cell.
  assert data["table"].optimum()["arch_of_best_fitness"] not in {arch_string(arch_of(i)) for i in FAILED}


def test_nb201_estimator_convenience(data):
  est = nb201_estimator(data["path"], "imagenet16", supplement=data["sup_path"], test="cifar10_test_acc")
  a = jnp.asarray(arch_of(99), jnp.int32)
  out = est(a, jax.random.key(0))
  assert float(out["accuracy"]) == np.float32(data["cols"]["in16_valid_acc_mean"][99])
  assert float(out["test_accuracy"]) == np.float32(data["cols"]["cifar10_test_acc"][99])
  assert est.optimum()["test_column"] == "cifar10_test_acc"


def test_benchmark_script_on_a_synthetic_table(data, tmp_path, capsys):
  """benchmarks/nb201_simulate.py end to end at the smallest setting: JSON written, loop equals device."""
  import json
  module = load_benchmark("nb201_simulate")
  out = tmp_path / "out.json"
  code = module.main(["--table", str(data["path"]), "--json", str(out), "--seeds", "3", "--budgets", "5",
                      "--strategies", "random,no_such_strategy", "--datasets", "cifar100", "--loop-seeds", "1"])
  assert code == 0
  report = json.loads(out.read_text())
  assert json.loads(capsys.readouterr().out) == report
  ok = [r for r in report["results"] if "error" not in r]
  bad = [r for r in report["results"] if "error" in r]
  assert len(ok) == 1 and len(bad) == 1 and "no_such_strategy" in bad[0]["error"]
  entry = ok[0]
  assert entry["test_column"] == "cifar100_test_acc" and entry["test"]["n"] == 3
  assert entry["loop"]["results_equal_device_on_seeds"] == 2
  assert entry["queries_mean"] == 5.0
  assert report["optimum"]["cifar100"]["best_fitness"] == np.nanmax(data["cols"]["c100_valid_acc_mean"])
  # A bad flag is a clear error, not a traceback.
  assert module.main(["--table", str(data["path"]), "--json", str(out), "--budgets", "ten"]) == 2
  assert "not a positive integer" in capsys.readouterr().err
