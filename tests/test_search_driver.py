"""Tests of nasjax.search.run: kill and resume, executors, failed evaluations, damaged and foreign logs.

The estimators are cheap pure functions of (arch, key), so every property is checked exactly and fast.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import search
from nasjax.errors import DivergenceError, NasjaxError
from nasjax.spaces import NB201Space
from nasjax.strategies import Strategy, random_search

SPACE = NB201Space()
WEIGHTS = jnp.arange(1, SPACE.num_decisions + 1, dtype=jnp.float32)
MAX_SCORE = float(jnp.sum(WEIGHTS) * 4)


@jax.jit
def toy_accuracy(arch, key):
  """A pure, jittable stand-in for training: a weighted op sum plus key-dependent noise."""
  return jnp.sum(arch * WEIGHTS) / MAX_SCORE + 0.01 * jax.random.uniform(key)


@jax.jit
def toy(arch, key):
  return {"accuracy": toy_accuracy(arch, key), "params": jnp.sum(arch)}


@jax.jit
def toy_nan_on_even_first_edge(arch, key):
  acc = toy_accuracy(arch, key)
  return {"accuracy": jnp.where(arch[0] % 2 == 0, jnp.nan, acc)}


def hill_climber(space, batch_size):
  """A strategy whose asks depend on every fitness told: a resume that got one wrong asks other archs."""

  def init(key):
    return {"best_arch": space.sample(key), "best_fitness": jnp.asarray(-jnp.inf, jnp.float32)}

  def ask(state, key):
    archs = jax.vmap(space.mutate, in_axes=(0, None))(jax.random.split(key, batch_size), state["best_arch"])
    return archs, state

  def tell(state, archs, fitness):
    fitness = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    i = jnp.argmax(fitness)
    better = fitness[i] > state["best_fitness"]
    return {"best_arch": jnp.where(better, archs[i], state["best_arch"]),
            "best_fitness": jnp.where(better, fitness[i], state["best_fitness"])}

  return Strategy(init, ask, tell, name="hill")


class Killed(Exception):
  """Stands for the process dying in the middle of a search."""


class Counting:
  """Wraps an estimator, counts its calls, and 'dies' once ``die_after`` evaluations are done."""

  def __init__(self, fn, die_after=None):
    self.fn, self.die_after, self.calls = fn, die_after, 0

  def __call__(self, arch, key):
    if self.die_after is not None and self.calls >= self.die_after:
      raise Killed
    self.calls += 1
    return self.fn(arch, key)


def strip_seconds(history):
  return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def log_lines(workdir):
  with open(workdir / "evaluations.jsonl") as f:
    return [json.loads(line) for line in f]


def run(estimator, workdir=None, budget=8, batch_size=3, seed=0, **kwargs):
  kwargs.setdefault("show_progress", False)
  return search.run(hill_climber(SPACE, batch_size), estimator, budget, jax.random.key(seed),
                    workdir=None if workdir is None else str(workdir), **kwargs)


def assert_same_search(a, b):
  assert strip_seconds(a["history"]) == strip_seconds(b["history"])
  assert a["best"]["index"] == b["best"]["index"]
  for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_each_evaluation_gets_its_documented_key():
  """Round r, position j evaluates with fold_in(split(fold_in(loop_key, r))[1], j): checked by hand."""
  key = jax.random.key(3)
  out = search.run(random_search(SPACE, batch_size=3), toy, 7, key, show_progress=False)
  _, loop_key = jax.random.split(key)
  for record in out["history"]:
    r, j = divmod(record["index"], 3)
    _, eval_key = jax.random.split(jax.random.fold_in(loop_key, r))
    arch = np.asarray(record["arch"])
    noise = float(jax.random.uniform(jax.random.fold_in(eval_key, j)))
    expected = float(np.sum(arch * np.arange(1, 7)) / MAX_SCORE) + 0.01 * noise
    assert record["metrics"]["accuracy"] == pytest.approx(expected, rel=1e-6)
    assert record["metrics"]["params"] == int(arch.sum())
  assert [r["index"] for r in out["history"]] == list(range(7))
  assert out["best"]["metrics"]["accuracy"] == max(r["metrics"]["accuracy"] for r in out["history"])


def test_kill_and_resume_equals_uninterrupted(tmp_path):
  whole = run(toy, tmp_path / "whole")
  killed = Counting(toy, die_after=4)  # dies in the middle of the second batch
  with pytest.raises(Killed):
    run(killed, tmp_path / "killed")
  assert len(log_lines(tmp_path / "killed")) == 4
  again = Counting(toy)
  resumed = run(again, tmp_path / "killed")
  assert again.calls == 8 - 4  # a logged evaluation is never re-trained
  assert_same_search(whole, resumed)
  assert strip_seconds(log_lines(tmp_path / "killed")) == strip_seconds(log_lines(tmp_path / "whole"))
  # A finished search resumes without evaluating anything, and the log can be extended.
  done = Counting(toy)
  assert_same_search(run(done, tmp_path / "killed"), whole)
  assert done.calls == 0
  longer = run(toy, tmp_path / "killed", budget=10)
  assert strip_seconds(longer["history"][:8]) == strip_seconds(whole["history"])
  assert len(log_lines(tmp_path / "killed")) == 10


def test_vmap_executor_equals_serial_and_compiles_once(tmp_path):
  traces = []

  def traced_toy(arch, key):
    traces.append(1)  # runs once per trace under jit, once per call when serial
    return toy(arch, key)

  serial = run(toy, tmp_path / "serial", budget=8, batch_size=3)
  vmapped = run(traced_toy, tmp_path / "vmap", budget=8, batch_size=3, executor="vmap")
  # Batches of 3, 3 and a budget-truncated 2: padding keeps it to one compilation.
  assert len(traces) == 1
  for a, b in zip(serial["history"], vmapped["history"]):
    assert a["arch"] == b["arch"] and a["failed"] == b["failed"]
    assert a["metrics"]["params"] == b["metrics"]["params"]
    assert a["metrics"]["accuracy"] == pytest.approx(b["metrics"]["accuracy"], rel=1e-6, abs=1e-7)
  assert serial["best"]["index"] == vmapped["best"]["index"]
  # Either executor resumes the other's log.
  killed = Counting(toy, die_after=5)
  with pytest.raises(Killed):
    run(killed, tmp_path / "mixed", budget=8)
  mixed = run(toy, tmp_path / "mixed", budget=8, executor="vmap")
  assert [r["arch"] for r in mixed["history"]] == [r["arch"] for r in serial["history"]]


@pytest.mark.parametrize("executor", ["serial", "vmap"])
def test_nan_evaluation_is_failed_and_never_wins(executor):
  out = search.run(random_search(SPACE, batch_size=4), toy_nan_on_even_first_edge, 12, jax.random.key(1),
                   show_progress=False, executor=executor)
  history = out["history"]
  failed = [r for r in history if r["failed"]]
  ok = [r for r in history if not r["failed"]]
  assert failed and ok  # this seed gives both kinds
  assert all(r["arch"][0] % 2 == 0 and np.isnan(r["metrics"]["accuracy"]) for r in failed)
  assert all(r["arch"][0] % 2 == 1 for r in ok)
  best = max(r["metrics"]["accuracy"] for r in ok)
  assert not out["best"]["failed"] and out["best"]["metrics"]["accuracy"] == best
  # The strategy was told NaN for the failures and did not take one as its best.
  assert float(out["state"]["best_fitness"]) == pytest.approx(best, rel=1e-6)
  assert int(out["state"]["count"]) == 12


def test_diverged_training_is_failed_other_errors_propagate(tmp_path):
  def diverging(arch, key):
    if int(arch[0]) % 2 == 0:
      raise DivergenceError("training loss became nan at epoch 1, step 3; the last ...", "loss", float("nan"), 1, 3)
    return toy(arch, key)

  out = run(diverging, tmp_path, budget=6)
  failed = [r for r in out["history"] if r["failed"]]
  assert failed and all("became nan" in r["error"] and r["metrics"] == {"error": r["error"]}
                        for r in failed)
  assert not out["best"]["failed"]

  def broken(arch, key):
    raise RuntimeError("a bug, not a result")

  with pytest.raises(RuntimeError, match="a bug"):
    run(broken, tmp_path / "broken")

  def says_nan(arch, key):  # recognised by type, not by its words
    raise NasjaxError("an input became nan before training")

  with pytest.raises(NasjaxError, match="became nan before"):
    run(says_nan, tmp_path / "says_nan")


def test_every_evaluation_failed_is_an_error():
  def always_nan(arch, key):
    return {"accuracy": jnp.nan}

  with pytest.raises(NasjaxError, match="every evaluation failed"):
    run(always_nan, budget=3)


def test_mismatched_resume_is_refused_before_training(tmp_path):
  identity = {"space": "nb201", "data": "cifar10", "epochs": 1}
  run(toy, tmp_path, budget=3, identity=identity)
  with pytest.raises(NasjaxError, match="another search .*differs in: data"):
    run(toy, tmp_path, budget=3, identity=dict(identity, data="svhn"))
  other_key = Counting(toy)
  with pytest.raises(NasjaxError, match="does not match this search at evaluation 0"):
    run(other_key, tmp_path, budget=3, identity=identity, seed=1)
  assert other_key.calls == 0
  assert len(log_lines(tmp_path)) == 3  # refused resumes leave the log alone
  run(toy, tmp_path, budget=3, identity=identity)  # the right settings still resume


def test_truncated_last_line_is_redone(tmp_path):
  whole = run(toy, tmp_path / "whole", budget=6)
  path = tmp_path / "cut" / "evaluations.jsonl"
  run(toy, tmp_path / "cut", budget=6)
  text = path.read_text()
  last_start = text.rstrip("\n").rfind("\n") + 1
  path.write_text(text[:last_start + (len(text) - last_start) // 2])  # killed while writing record 5
  again = Counting(toy)
  resumed = run(again, tmp_path / "cut", budget=6)
  assert again.calls == 1
  assert_same_search(whole, resumed)
  assert strip_seconds(log_lines(tmp_path / "cut")) == strip_seconds(log_lines(tmp_path / "whole"))
  # Killed between a record and its newline: the record counts, and the next one gets its own line.
  path.write_text(path.read_text().rstrip("\n"))
  again = Counting(toy)
  longer = run(again, tmp_path / "cut", budget=7)
  assert again.calls == 1 and len(log_lines(tmp_path / "cut")) == 7
  assert strip_seconds(longer["history"][:6]) == strip_seconds(whole["history"])


@pytest.mark.parametrize("content,message", [
    ('{"index": 0}\n', "not record 0"),
    ("hello\n" + json.dumps({"index": 1, "arch": [0] * 6, "metrics": {}, "failed": False}) + "\n",
     "damaged and not the last line"),
])
def test_foreign_or_damaged_logs_are_refused(tmp_path, content, message):
  (tmp_path / "evaluations.jsonl").write_text(content)
  with pytest.raises(NasjaxError, match=message):
    run(toy, tmp_path, budget=2)
  assert (tmp_path / "evaluations.jsonl").read_text() == content  # never "repaired" away


def test_bad_arguments_give_clear_errors():
  with pytest.raises(NasjaxError, match="unknown executor 'threads'"):
    run(toy, executor="threads")
  with pytest.raises(NasjaxError, match="budget must be a positive"):
    run(toy, budget=0)
  with pytest.raises(NasjaxError, match="no 'accuracy' metric .*params"):
    run(lambda arch, key: {"params": 3}, budget=1)

  def not_jittable(arch, key):
    return {"accuracy": float(arch[0])}

  with pytest.raises(NasjaxError, match="pure, jittable"):
    run(not_jittable, budget=2, executor="vmap")


def test_multi_fidelity_strategy_gets_levels_and_budget_in_full_trainings():
  from nasjax.strategies import hyperband
  space = NB201Space()
  strategy = hyperband(space, resources=(1, 3, 9), eta=3)
  seen = []

  def estimator(arch, key, fidelity):
    del key
    seen.append(int(fidelity))
    return {"accuracy": float(np.sum(np.asarray(arch))) + 0.01 * int(fidelity)}

  out = search.run(strategy, estimator, 6, jax.random.key(0), show_progress=False)
  levels = [r["fidelity"] for r in out["history"]]
  assert levels == seen and set(levels) > {0}
  spent = sum(strategy.fidelity_costs[level] for level in levels)
  assert 6 <= spent < 6 + 1
  top = max(levels)
  assert out["best"]["fidelity"] == top
  assert out["best"]["metrics"]["accuracy"] == max(r["metrics"]["accuracy"] for r in out["history"]
                                                  if r["fidelity"] == top)


class _Killed(Exception):
  pass


def test_killed_regularized_evolution_resumes_to_the_uninterrupted_run(tmp_path):
  from nasjax.strategies import regularized_evolution
  space = NB201Space()
  strategy = regularized_evolution(space, population_size=6, tournament_size=3)
  table = np.random.default_rng(0).random(space.size)

  def estimator(arch, key):
    del key
    return {"accuracy": float(table[int(space.arch_to_index(np.asarray(arch)))])}

  full = search.run(strategy, estimator, 20, jax.random.key(3), show_progress=False)
  calls = {"n": 0}

  def dying(arch, key):
    calls["n"] += 1
    if calls["n"] > 11:
      raise _Killed()
    return estimator(arch, key)

  with pytest.raises(_Killed):
    search.run(strategy, dying, 20, jax.random.key(3), workdir=str(tmp_path), show_progress=False)
  resumed = search.run(strategy, estimator, 20, jax.random.key(3), workdir=str(tmp_path), show_progress=False)
  strip = lambda h: [(r["arch"], r["metrics"]) for r in h]
  assert strip(resumed["history"]) == strip(full["history"])
  assert resumed["best"]["arch"] == full["best"]["arch"]
  for a, b in zip(jax.tree.leaves(resumed["state"]), jax.tree.leaves(full["state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
