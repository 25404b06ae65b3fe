"""NAS-Bench-201 as a tabular estimator: a query is one gather from a table of trained results.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search", ICLR 2020;
Dong, Liu, Musial & Gabrys, "NATS-Bench: Benchmarking NAS Algorithms for Architecture Topology and Size",
IEEE TPAMI 2021 (its topology space "tss" holds the same 15,625 cells). A tabular benchmark replaces
training by a lookup, so a search strategy can be run for many seeds and budgets in seconds and compared
on the test accuracy of the architecture it would have returned (Ying et al., "NAS-Bench-101", ICML 2019).

The table is loaded once on the host, validated, and reordered so that row ``i`` holds the architecture
with :meth:`NB201Space.arch_to_index` ``== i`` (base-5 op indices, first edge most significant); the
estimator is then a pure ``(arch int32[6], key, fidelity=None) -> metrics`` function of constant arrays,
which jits, vmaps over a population and vmaps again over seeds (see :mod:`nasjax.parallel.population`).

Protocol (as in the NB201 paper's search experiments): the search sees a *validation* accuracy (the fitness)
and the *test* accuracy of the architecture it returns is reported. Data sets and their columns:

==============  =========================  =========================  ======================================
data set        fitness (searched)         reported test              setting
==============  =========================  =========================  ======================================
``cifar10``     ``c10valid_valid_acc``     ``cifar10_test_acc``       fitness: cifar10-valid (25k train /
                                                                      25k valid); test: CIFAR-10 test set
                                                                      after training on train+valid
``cifar100``    ``c100_valid_acc_mean``    ``cifar100_test_acc``      x-valid half of the CIFAR-100 test set
``imagenet16``  ``in16_valid_acc_mean``    ``imagenet16_test_acc``    x-valid half of ImageNet16-120's test
==============  =========================  =========================  ======================================

Metrics of one query (float32 scalars unless noted):

* ``accuracy``: the fitness at the queried fidelity, in percent; NaN where the table records a failed run.
  With ``seed_noise=True`` it is one of the trained seeds' validation accuracies, drawn uniformly with the
  key (the NB201 paper's protocol for search experiments: a query returns one training run, not the mean).
* ``test_accuracy``: the reported test column (the 200-epoch seed mean; never seen by a strategy).
* ``params`` (number of parameters), ``latency_ms`` and ``latency_s`` (NATS-Bench GPU latency per batch, in
  milliseconds and in the table's seconds, e.g. for ``--objectives accuracy:max,latency_s:min``), ``cost`` (the
  simulated training time in seconds: the data set's 200-epoch train time, times ``epochs / 200``),
  ``budget`` (the query's cost in full-training equivalents, ``epochs / 200``), ``epochs`` and ``fidelity``
  (int32), ``index`` (int32, our table index) and ``failed`` (bool). An encoding outside the space
  (an op index not in 0..4) is a failed query: NaN fitness, ``failed`` true.

Fidelities: level 0 is the lowest. Without a supplement there is one level (200 epochs). With the
12-epoch supplement, level 0 is 12 epochs and level 1 is 200 epochs. The supplement holds 12-epoch *test*
accuracies (probably NATS-Bench ``hp='12'``; its provenance is unverified, see the data's PROVENANCE.md),
so at level 0 the fitness is that 12-epoch test accuracy of the fitness's data set: a low-fidelity signal
for multi-fidelity strategies only, without seed noise (one value per cell). A traced fidelity is clipped
to ``[0, num_fidelities)`` (a jitted function cannot raise); the ``fidelity`` metric reports the level
actually read.

Data formats
------------
nasjax reads one CSV file (comma separated, a header row, one row per cell, 15,625 rows, any row order):
``arch_str`` in the benchmark's notation (``|nor_conv_3x3~0|+|...~0|...~1|+|...~0|...~1|...~2|``) and the
numeric columns :data:`REQUIRED_COLUMNS` (empty cell or ``nan`` = missing; a third seed is missing for
the 7,456 cells trained with two seeds). Optional columns read when present: ``arch_index`` (the official
NATS-Bench index, kept as :attr:`NB201Table.nats_index`), ``ops_code`` (checked against ``arch_str``),
``unique_str`` and further numeric columns such as ``c10valid_test_acc`` or ``c10valid_train_loss``,
usable as the reported column. The low-fidelity supplement is a second CSV with ``arch_str`` and
``{cifar10,cifar100,imagenet16}_test_acc_12ep`` (optionally ``*_test_acc_200ep_oneseed``).

The official files are pickles: NAS-Bench-201 ``NAS-Bench-201-v1_[01]-*.pth`` (``torch.save``) and
NATS-Bench ``NATS-tss-v1_0-3ffb9-simple/*.pickle.pbz2``. Unpickling runs arbitrary code, so nasjax never
opens them. Convert them once, in an environment you trust for that purpose, with the official API
(``pip install nats_bench``) and write the CSV above, for example::

  api = nats_bench.create(PATH, "tss", fast_mode=True)
  for i in range(len(api)):                     # NATS-Bench index order; nasjax reorders by arch_str
    row = {"arch_index": i, "arch_str": api.arch(i)}
    row["cifar10_test_acc"] = api.get_more_info(i, "cifar10", hp="200", is_random=False)["test-accuracy"]
    # ... cifar100 / ImageNet16-120 test accuracies the same way
    row["c10valid_valid_acc"] = api.get_more_info(i, "cifar10-valid", hp="200")["valid-accuracy"]
    # per seed: api.get_more_info(i, ds, hp="200", is_random=seed)["valid-accuracy"] for each trained seed
    # (seeds are listed by api.query_meta_info_by_index(i, hp="200").get_dataset_seeds(ds))
    cost = api.get_cost_info(i, ds)             # "params" (MB), "latency" (s), "T-train@total" (s)
    # 12-epoch supplement: api.get_more_info(i, ds, hp="12")["test-accuracy"]

Only plain numbers and strings go into the CSV, which nasjax parses with the ``csv`` module.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.spaces.base import shorten, uniform_ints
from nasjax.spaces.nb201 import NUM_CELLS, NB201Space

FULL_EPOCHS = 200
LOW_EPOCHS = 12


@dataclasses.dataclass(frozen=True)
class DatasetColumns:
  """The columns that describe one data set of the benchmark."""
  name: str
  fitness: str         # the searched validation accuracy (seed mean)
  test: str            # the reported test accuracy
  prefix: str          # of the per-seed, params, latency and train-time columns
  low_fidelity: str    # the 12-epoch column of the supplement

  @property
  def seeds(self) -> tuple[str, ...]:
    return tuple(f"{self.prefix}_valid_acc_seed{s}" for s in range(3))


DATASETS: dict[str, DatasetColumns] = {
    "cifar10": DatasetColumns("cifar10", "c10valid_valid_acc", "cifar10_test_acc", "c10valid",
                              "cifar10_test_acc_12ep"),
    "cifar100": DatasetColumns("cifar100", "c100_valid_acc_mean", "cifar100_test_acc", "c100",
                               "cifar100_test_acc_12ep"),
    "imagenet16": DatasetColumns("imagenet16", "in16_valid_acc_mean", "imagenet16_test_acc", "in16",
                                 "imagenet16_test_acc_12ep"),
}
FITNESS_COLUMNS = {d.fitness: d for d in DATASETS.values()}

REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    ["arch_str"] + [d.test for d in DATASETS.values()] + [d.fitness for d in DATASETS.values()]
    + [f"{d.prefix}_{suffix}" for d in DATASETS.values()
       for suffix in ("valid_acc_seed0", "valid_acc_seed1", "valid_acc_seed2", "n_seeds", "params_mb",
                      "latency_s", "train_time_s")])
SUPPLEMENT_COLUMNS: tuple[str, ...] = ("arch_str",) + tuple(d.low_fidelity for d in DATASETS.values())
# Columns that hold text; every other column of the table is read as numbers (True/False as 1/0).
_TEXT_COLUMNS = ("arch_str", "unique_str", "ops_code")
_POWERS = 5 ** np.arange(5, -1, -1)  # our index: first edge most significant (NB201Space.arch_to_index)
# Columns of the published CSV that are not required but are parsed (strictly) when present.
_OPTIONAL_NUMERIC = (
    "arch_index", "c10valid_train_loss", "c10valid_train_acc", "c10valid_valid_loss", "c10valid_test_loss",
    "c10valid_test_acc", "c10valid_valid_time_s", "c10valid_test_time_s", "c10valid_params_seed_disagree",
    "c100_params_seed_disagree", "in16_params_seed_disagree", "cifar10_test_acc_200ep_oneseed",
    "cifar100_test_acc_200ep_oneseed", "imagenet16_test_acc_200ep_oneseed")


@dataclasses.dataclass(frozen=True, eq=False)
class NB201Table:
  """A validated NAS-Bench-201 table in our index order (row ``i`` is ``index_to_arch(i)``).

  ``columns`` maps a column name to ``np.float64[15625]`` (read-only); ``supplement`` likewise for the
  12-epoch supplement, or None. ``nats_index`` is the official index of each row where the file gave one.
  """
  columns: Mapping[str, np.ndarray]
  supplement: Mapping[str, np.ndarray] | None
  arch_strs: tuple[str, ...]
  nats_index: np.ndarray | None
  path: str

  def column(self, name: str) -> np.ndarray:
    if name in self.columns:
      return self.columns[name]
    if self.supplement is not None and name in self.supplement:
      return self.supplement[name]
    known = sorted(self.columns) + sorted(self.supplement or ())
    raise NasjaxError(f"the NB201 table has no column {name!r}; available: {', '.join(known)}")

  def row(self, arch: Any) -> dict[str, float]:
    """Host side: every numeric column of one architecture (an encoding or an ``arch_str``)."""
    space = NB201Space()
    a = space.from_string(arch) if isinstance(arch, str) else space.check(arch)
    i = int(space.arch_to_index(a))
    out = {name: float(col[i]) for name, col in self.columns.items()}
    out.update({name: float(col[i]) for name, col in (self.supplement or {}).items()})
    return out

  def optimum(self, fitness: str = "c10valid_valid_acc", test: str | None = None) -> dict:
    """The best cell by ``fitness`` (what a perfect search returns) and the best reachable test value."""
    columns = resolve_columns(fitness, test)
    fit, tst = self.column(columns.fitness), self.column(columns.test)
    # NaN rows are failed runs; they cannot be the optimum.
    i = int(np.nanargmax(fit))
    return {"fitness_column": columns.fitness, "test_column": columns.test,
            "best_fitness": float(fit[i]), "test_of_best_fitness": float(tst[i]),
            "arch_of_best_fitness": self.arch_strs[i], "best_test": float(np.nanmax(tst)),
            "arch_of_best_test": self.arch_strs[int(np.nanargmax(tst))]}


def resolve_columns(fitness: str, test: str | None = None) -> DatasetColumns:
  """The data-set columns for a fitness column (or data-set name), with the test column overridden."""
  if fitness in DATASETS:
    columns = DATASETS[fitness]
  elif fitness in FITNESS_COLUMNS:
    columns = FITNESS_COLUMNS[fitness]
  else:
    raise NasjaxError(f"unknown NB201 fitness {fitness!r}; accepted columns: {', '.join(FITNESS_COLUMNS)} "
                      f"(or the data sets {', '.join(DATASETS)})")
  if test is not None:
    if not isinstance(test, str):
      raise NasjaxError(f"the test column must be a column name (str); got {type(test).__name__}")
    columns = dataclasses.replace(columns, test=test)
  return columns


# ------------------------------------------------------------------------------------------ loading
def _parse_number(text: str, column: str, line: int, path: str) -> float:
  t = text.strip()
  if t == "" or t.lower() in ("nan", "na"):
    return math.nan
  if t in ("True", "true"):
    return 1.0
  if t in ("False", "false"):
    return 0.0
  try:
    return float(t)
  except ValueError:
    raise NasjaxError(f"{path}, line {line}: column {column!r} must be a number (or empty for missing); "
                      f"got {shorten(t)!r}") from None


def _read_csv(path: str, required: tuple[str, ...]
              ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, list[str]]]:
  """Reads a CSV strictly: (our index of every row, numeric columns, text columns), in file order.

  Rows are checked as they are read (arch string, duplicates, ops_code, numbers), so an error names
  its line without reading the rest of a large file.
  """
  if not isinstance(path, (str, os.PathLike)):
    raise NasjaxError(f"the NB201 table path must be a file path; got {type(path).__name__}")
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise NasjaxError(f"NB201 table {path!r} does not exist or is not a file; pass the CSV described in "
                      "nasjax.estimators.tabular (e.g. ../shared/data/nb201/nb201.csv)")
  space = NB201Space()
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    try:
      header = next(reader)
    except StopIteration:
      raise NasjaxError(f"{path} is empty; expected a CSV header with the columns "
                        f"{', '.join(required)}") from None
    except (csv.Error, UnicodeDecodeError) as e:
      raise NasjaxError(f"{path}: not a readable CSV ({e})") from None
    header = [h.strip() for h in header]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
      raise NasjaxError(f"{path}: column(s) {', '.join(dup)} appear more than once in the header")
    missing = [c for c in required if c not in header]
    if missing:
      raise NasjaxError(f"{path}: missing column(s) {', '.join(missing)}; this file needs the columns "
                        f"{', '.join(required)}")
    numeric = [c for c in header if (c in required or c in _OPTIONAL_NUMERIC) and c not in _TEXT_COLUMNS]
    text = [c for c in header if c in _TEXT_COLUMNS]
    col_of = {c: header.index(c) for c in header}
    values: dict[str, list[float]] = {c: [] for c in numeric}
    texts: dict[str, list[str]] = {c: [] for c in text}
    index: list[int] = []
    line_of: dict[int, int] = {}
    try:
      for row in reader:
        line = reader.line_num
        if not row:
          continue  # a blank line carries no data (e.g. a trailing newline)
        if len(index) == NUM_CELLS:
          raise NasjaxError(f"{path}: more than {NUM_CELLS} data rows; an NB201 table has exactly "
                            f"{NUM_CELLS} rows, one per cell (5 ops on 6 edges)")
        if len(row) != len(header):
          raise NasjaxError(f"{path}, line {line}: {len(row)} fields, but the header has {len(header)}")
        arch_str = row[col_of["arch_str"]].strip()
        try:
          arch = space.from_string(arch_str)
        except NasjaxError as e:
          raise NasjaxError(f"{path}, line {line}: bad arch_str: {e}") from None
        # Host arithmetic: NB201Space.arch_to_index is a jnp function, 15,625 dispatches would be slow.
        i = int(np.dot(arch, _POWERS))
        if i in line_of:
          raise NasjaxError(f"{path}: architecture {shorten(arch_str, 100)!r} appears twice (lines "
                            f"{line_of[i]} and {line}); every cell must appear exactly once")
        line_of[i] = line
        index.append(i)
        if "ops_code" in col_of:
          code = row[col_of["ops_code"]].strip()
          if code != "".join(str(int(v)) for v in arch):
            raise NasjaxError(f"{path}, line {line}: ops_code {shorten(code)!r} does not match arch_str "
                              f"{arch_str!r}; ops_code is each edge's op index in arch_str order")
        for c in numeric:
          values[c].append(_parse_number(row[col_of[c]], c, line, path))
        for c in text:
          texts[c].append(row[col_of[c]].strip())
    except (csv.Error, UnicodeDecodeError) as e:
      raise NasjaxError(f"{path}, line {reader.line_num}: not a readable CSV ({e})") from None
  if len(index) != NUM_CELLS:
    raise NasjaxError(f"{path}: {len(index)} data rows; an NB201 table has exactly {NUM_CELLS} rows, "
                      "one per cell (5 ops on 6 edges)")
  return (np.asarray(index, np.int64), {c: np.asarray(v, np.float64) for c, v in values.items()}, texts)


def _reorder(index: np.ndarray, column: np.ndarray) -> np.ndarray:
  out = np.empty_like(column)
  out[index] = column
  out.setflags(write=False)
  return out


def _check_seeds(path: str, columns: Mapping[str, np.ndarray], arch_strs: tuple[str, ...]) -> None:
  """The seed-mean, per-seed and seed-count columns must agree: a misaligned column shows up here."""
  for d in DATASETS.values():
    mean = columns[d.fitness]
    seeds = np.stack([columns[c] for c in d.seeds], axis=1)
    finite = np.isfinite(seeds)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore"):
      seed_mean = np.where(count > 0, np.where(finite, seeds, 0).sum(axis=1) / np.maximum(count, 1), np.nan)
    ok = np.isfinite(mean)
    bad_count = ok & (count != columns[f"{d.prefix}_n_seeds"])
    bad_mean = ok & ~(np.abs(seed_mean - mean) <= 1e-3)
    for bad, what in ((bad_count, f"{d.prefix}_n_seeds differs from the number of non-empty "
                                  f"{d.prefix}_valid_acc_seed* values"),
                      (bad_mean, f"{d.fitness} differs from the mean of the non-empty "
                                 f"{d.prefix}_valid_acc_seed* values by more than 1e-3")):
      if bad.any():
        i = int(np.argmax(bad))
        raise NasjaxError(f"{path}: {what} for {int(bad.sum())} cell(s), e.g. {arch_strs[i]}; "
                          "a failed run is written as an empty (or nan) mean")


def load_nb201_table(path: str | os.PathLike, supplement: str | os.PathLike | None = None) -> NB201Table:
  """Reads and validates the NB201 CSV (and optionally the 12-epoch supplement); see the module docstring.

  Raises NasjaxError for a missing column, a wrong row count, an unparsable or repeated ``arch_str``,
  a non-numeric value, an ``ops_code`` or ``arch_index`` that contradicts the rest, or seed columns that
  disagree with their mean.
  """
  index, numeric, texts = _read_csv(path, REQUIRED_COLUMNS)
  path = os.fspath(path)
  nats_index = None
  if "arch_index" in numeric:
    raw = numeric.pop("arch_index")
    if not (np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))
            and len(np.unique(raw)) == NUM_CELLS):
      raise NasjaxError(f"{path}: arch_index must hold {NUM_CELLS} distinct integers (the official "
                        "NATS-Bench indices), or be left out")
    nats_index = _reorder(index, raw.astype(np.int64))
  columns = {c: _reorder(index, v) for c, v in numeric.items()}
  ordered = [""] * NUM_CELLS
  for r, i in enumerate(index):
    ordered[i] = texts["arch_str"][r]
  ordered_strs = tuple(ordered)
  _check_seeds(path, columns, ordered_strs)

  supplement_columns = None
  if supplement is not None:
    sup_index, sup_numeric, _ = _read_csv(supplement, SUPPLEMENT_COLUMNS)
    sup_numeric.pop("arch_index", None)  # the arch string is what aligns the two files
    supplement_columns = {c: _reorder(sup_index, v) for c, v in sup_numeric.items()}
  return NB201Table(columns=columns, supplement=supplement_columns, arch_strs=ordered_strs,
                    nats_index=nats_index, path=path)


# ------------------------------------------------------------------------------------------ estimator
class NB201TabularEstimator:
  """``estimator(arch, key, fidelity=None) -> metrics``: a pure, jittable, vmappable table lookup.

  Args:
    table: a :class:`NB201Table` (from :func:`load_nb201_table`).
    fitness: the searched column, ``c10valid_valid_acc`` (default), ``c100_valid_acc_mean`` or
      ``in16_valid_acc_mean`` (or the data-set names ``cifar10``, ``cifar100``, ``imagenet16``).
    test: the reported column (default: the data set's test accuracy, see the module docstring).
    seed_noise: return one trained seed's validation accuracy, drawn with the key, instead of the mean.
    low_fidelity: use the table's 12-epoch supplement as fidelity level 0 (when it was loaded).

  >>> est = NB201TabularEstimator(load_nb201_table("nb201.csv"))  # doctest: +SKIP
  >>> jax.vmap(est)(archs, jax.random.split(key, len(archs)))["accuracy"]  # doctest: +SKIP
  """
  jittable = True
  name = "tabular"

  def __init__(self, table: NB201Table, fitness: str = "c10valid_valid_acc", *, test: str | None = None,
               seed_noise: bool = False, low_fidelity: bool = True):
    if not isinstance(table, NB201Table):
      raise NasjaxError(f"expected an NB201Table from load_nb201_table; got {type(table).__name__}")
    self.table = table
    self.columns = resolve_columns(fitness, test)
    self.seed_noise = bool(seed_noise)
    d = self.columns
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    full_fitness = f32(table.column(d.fitness))
    levels = [full_fitness]
    epochs = [FULL_EPOCHS]
    if low_fidelity and table.supplement is not None:
      levels.insert(0, f32(table.column(d.low_fidelity)))
      epochs.insert(0, LOW_EPOCHS)
    self.fidelity_epochs: tuple[int, ...] = tuple(epochs)
    # One stacked array per quantity keeps a query a single gather whatever the fidelity.
    self._fitness = np.stack(levels)                                  # [L, N]
    seeds = np.stack([table.column(c) for c in d.seeds], axis=1)      # [N, 3]
    # Finite seed values first, so "draw one of the first n" is a draw among the trained seeds.
    order = np.argsort(~np.isfinite(seeds), axis=1, kind="stable")
    self._seeds = f32(np.take_along_axis(seeds, order, axis=1))
    self._num_seeds = np.isfinite(seeds).sum(axis=1).astype(np.int32)
    self._test = f32(table.column(d.test))
    self._params = f32(np.round(table.column(f"{d.prefix}_params_mb") * 1e6))
    self._latency_ms = f32(table.column(f"{d.prefix}_latency_s") * 1e3)
    self._latency_s = f32(table.column(f"{d.prefix}_latency_s"))
    self._train_s = f32(table.column(f"{d.prefix}_train_time_s"))

  @property
  def num_fidelities(self) -> int:
    return len(self.fidelity_epochs)

  @property
  def full_fidelity(self) -> int:
    return self.num_fidelities - 1

  def __call__(self, arch: jax.Array, key: jax.Array, fidelity: Any = None) -> dict[str, jax.Array]:
    space = NB201Space()
    arch = jnp.asarray(arch)
    # An out-of-range encoding would gather a clamped, wrong row; it is a failed query instead.
    valid = space.is_valid(arch)
    index = jnp.where(valid, space.arch_to_index(arch), 0)
    if fidelity is None:
      level = jnp.int32(self.full_fidelity)
    else:
      level = jnp.clip(jnp.asarray(fidelity, jnp.int32), 0, self.full_fidelity)
    fitness = jnp.asarray(self._fitness)[level, index]
    if self.seed_noise:
      n = jnp.asarray(self._num_seeds)[index]
      seed = uniform_ints(key, (), n)
      # A cell whose mean is missing is a failed run, whatever its seed columns say.
      trained = (n > 0) & jnp.isfinite(jnp.asarray(self._fitness)[self.full_fidelity, index])
      noisy = jnp.where(trained, jnp.asarray(self._seeds)[index, seed], jnp.nan)
      # Only the 200-epoch level has per-seed values; the supplement holds one run per cell.
      fitness = jnp.where(level == self.full_fidelity, noisy, fitness)
    else:
      del key
    fitness = jnp.where(valid, fitness, jnp.nan)
    epochs = jnp.asarray(np.asarray(self.fidelity_epochs, np.int32))[level]
    # Gathered from host-computed constants: XLA may rewrite ``epochs / 200`` as ``epochs * 0.005``
    # in one program and not in another, and budget sums must agree to the last bit across drivers.
    budget = jnp.asarray(np.asarray(self.fidelity_epochs, np.float32) / np.float32(FULL_EPOCHS))[level]
    return {
        "accuracy": fitness,
        "test_accuracy": jnp.asarray(self._test)[index],
        "params": jnp.asarray(self._params)[index],
        "latency_ms": jnp.asarray(self._latency_ms)[index],
        "latency_s": jnp.asarray(self._latency_s)[index],  # the table's own unit, for objective specs
        "cost": jnp.asarray(self._train_s)[index] * budget,
        "budget": budget,
        "epochs": epochs,
        "fidelity": level,
        "index": index,
        "failed": ~jnp.isfinite(fitness),
    }

  def optimum(self) -> dict:
    """The table's best cell by this estimator's fitness, with its test value (see NB201Table.optimum)."""
    return self.table.optimum(self.columns.fitness, self.columns.test)


def nb201_estimator(path: str | os.PathLike, fitness: str = "c10valid_valid_acc", *,
                    supplement: str | os.PathLike | None = None, test: str | None = None,
                    seed_noise: bool = False) -> NB201TabularEstimator:
  """Loads the table (and supplement) and returns the estimator in one call."""
  return NB201TabularEstimator(load_nb201_table(path, supplement), fitness, test=test,
                               seed_noise=seed_noise)
