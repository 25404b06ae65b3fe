"""Tests of nasjax.parallel.ray_executor on a local two-worker Ray cluster bound to 127.0.0.1.

The estimators are cheap numpy/jax functions of (arch, key), deterministic unless a test makes them crash
or raise, so every Ray result is compared exactly with the serial executor's. Files in a temporary
directory are the only channel between the test and the workers (attempt counters, crash markers, a
two-task rendezvous that proves a batch runs concurrently).
"""

import os
import sys
import time
import uuid
import warnings

# Ray maps a loopback node address to the host's own address unless this is off; it must be set before
# ray is imported, and keeps every server of the test cluster on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from nasjax import search  # noqa: E402
from nasjax.errors import DivergenceError, NasjaxError  # noqa: E402
from nasjax.parallel.ray_executor import RayExecutor, deferred  # noqa: E402
from nasjax.spaces import NB201Space  # noqa: E402
from nasjax.strategies import random_search  # noqa: E402

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'nasjax[ray]'); Ray executor "
                                        "tests need it")

SPACE = NB201Space()

# One Ray cluster per test process: under `pytest -n N --dist loadgroup` these tests share a worker.
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def cluster():
  from ray import cloudpickle
  with warnings.catch_warnings():
    # Ray forks only to exec its daemons at once, which is safe; JAX warns about any fork.
    warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             object_store_memory=100 * 2**20)
  # The workers cannot import this test module, so its estimators travel by value.
  cloudpickle.register_pickle_by_value(sys.modules[__name__])
  yield
  cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
  ray.shutdown()


def score(arch, key):
  """Deterministic: a weighted op sum plus noise drawn from the evaluation's own key."""
  noise = float(jax.random.uniform(key))
  return float(np.sum(np.asarray(arch) * np.arange(1, 7)) / 84.0 + 0.01 * noise)


def deterministic(arch, key):
  return {"accuracy": score(arch, key), "params": int(np.sum(np.asarray(arch)))}


class AttemptLog:
  """Counts attempts per architecture in files, which survive a crashed worker."""

  def __init__(self, directory):
    self.directory = str(directory)

  def record(self, arch) -> int:
    name = "-".join(str(int(v)) for v in np.asarray(arch))
    path = os.path.join(self.directory, f"{name}.{uuid.uuid4().hex}")
    open(path, "w").close()
    return self.count(arch)

  def count(self, arch) -> int:
    name = "-".join(str(int(v)) for v in np.asarray(arch)) + "."
    return sum(f.startswith(name) for f in os.listdir(self.directory))


class CrashOnce(AttemptLog):
  """Kills its worker process on the first attempt at architectures whose first edge is ``first_edge``."""

  def __init__(self, directory, first_edge):
    super().__init__(directory)
    self.first_edge = first_edge

  def __call__(self, arch, key):
    if self.record(arch) == 1 and int(np.asarray(arch)[0]) == self.first_edge:
      os._exit(1)
    return deterministic(arch, key)


class FailSome(AttemptLog):
  """Raises on every attempt at architectures whose first edge is even; diverges on first edge 1."""

  def __call__(self, arch, key):
    self.record(arch)
    first = int(np.asarray(arch)[0])
    if first % 2 == 0:
      raise RuntimeError(f"out of memory for edge op {first}")
    if first == 1:
      raise DivergenceError("training loss became nan at epoch 1, step 2", "loss", float("nan"), 1, 2)
    return deterministic(arch, key)


class Counted(AttemptLog):
  """``deterministic``, noting every evaluation."""

  def __call__(self, arch, key):
    self.record(arch)
    return deterministic(arch, key)


class Rendezvous:
  """Each evaluation announces itself and waits for another: only concurrent evaluations all meet."""

  def __init__(self, directory, timeout_s=30.0):
    self.directory, self.timeout_s = str(directory), timeout_s

  def __call__(self, arch, key):
    open(os.path.join(self.directory, f"{os.getpid()}.{uuid.uuid4().hex}"), "w").close()
    deadline = time.monotonic() + self.timeout_s
    while len(os.listdir(self.directory)) < 2 and time.monotonic() < deadline:
      time.sleep(0.02)
    met = len(os.listdir(self.directory)) >= 2
    return {"accuracy": score(arch, key), "met": float(met), "pid": os.getpid()}


def make_counting_estimator(directory):
  """A factory for deferred(): notes every build, so the test can count builds per worker."""
  open(os.path.join(str(directory), f"build.{os.getpid()}.{uuid.uuid4().hex}"), "w").close()
  return deterministic


def strip(history, keys=("seconds", "attempts")):
  return [{k: v for k, v in r.items() if k not in keys} for r in history]


def search_with(estimator, executor, budget=6, batch_size=3, seed=0, workdir=None):
  return search.run(random_search(SPACE, batch_size=batch_size), estimator, budget, jax.random.key(seed),
                    workdir=None if workdir is None else str(workdir), show_progress=False,
                    executor=executor)


def test_ray_results_equal_serial(cluster, tmp_path):
  serial = search_with(deterministic, "serial", workdir=tmp_path / "serial")
  ray_out = search_with(deterministic, RayExecutor(num_workers=2), workdir=tmp_path / "ray")
  assert strip(ray_out["history"]) == strip(serial["history"])
  assert ray_out["best"]["index"] == serial["best"]["index"]
  assert float(ray_out["state"]["best_fitness"]) == float(serial["state"]["best_fitness"])
  assert (tmp_path / "ray" / "evaluations.jsonl").read_text().count("\n") == 6


def test_batch_runs_concurrently(cluster, tmp_path):
  out = search_with(Rendezvous(tmp_path), RayExecutor(num_workers=2), budget=2, batch_size=2)
  assert [r["metrics"]["met"] for r in out["history"]] == [1.0, 1.0]
  assert len({r["metrics"]["pid"] for r in out["history"]}) == 2
  assert os.getpid() not in {r["metrics"]["pid"] for r in out["history"]}


def test_crashed_worker_is_retried_and_succeeds(cluster, tmp_path):
  estimator = CrashOnce(tmp_path, first_edge=0)
  out = search_with(estimator, RayExecutor(num_workers=2, max_retries=2), budget=2, batch_size=2)
  serial = search_with(deterministic, "serial", budget=2, batch_size=2)
  assert strip(out["history"]) == strip(serial["history"])
  crashed = [r for r in out["history"] if r["arch"][0] == 0]
  assert len(crashed) == 1  # this seed crashes one worker of the two
  for record in out["history"]:
    attempts = 2 if record in crashed else 1
    assert not record["failed"] and record.get("attempts", 1) == attempts
    assert estimator.count(record["arch"]) == attempts


def test_always_failing_evaluation_is_recorded_failed(cluster, tmp_path):
  estimator = FailSome(tmp_path)
  out = search_with(estimator, RayExecutor(num_workers=2, max_retries=1), budget=8, batch_size=4, seed=2)
  history = out["history"]
  errors = [r for r in history if r["arch"][0] % 2 == 0]
  diverged = [r for r in history if r["arch"][0] == 1]
  ok = [r for r in history if r["arch"][0] % 2 == 1 and r["arch"][0] != 1]
  assert errors and diverged and ok  # this seed gives every kind
  for r in errors:
    # Tried 1 + max_retries times, then failed with the user's error text.
    assert r["failed"] and r["attempts"] == 2 and estimator.count(r["arch"]) == 2
    assert r["metrics"] == {"error": r["error"]}
    assert "attempt 2: RuntimeError: out of memory for edge op" in r["error"]
  for r in diverged:
    # A NaN loss is a result: never retried.
    assert r["failed"] and "attempts" not in r and estimator.count(r["arch"]) == 1
    assert "became nan" in r["error"]
  serial = search_with(deterministic, "serial", budget=8, batch_size=4, seed=2)["history"]
  for r in ok:
    assert not r["failed"] and r["metrics"] == serial[r["index"]]["metrics"]
  assert not out["best"]["failed"]
  assert out["best"]["metrics"]["accuracy"] == max(r["metrics"]["accuracy"] for r in ok)
  assert float(out["state"]["best_fitness"]) == pytest.approx(out["best"]["metrics"]["accuracy"])


def test_interrupted_ray_search_resumes_exactly(cluster, tmp_path):
  """The driver dies while a batch is still running on the workers; the resumed search is the same."""

  class Killed(Exception):
    pass

  written = []

  def to_string_then_die(arch):
    if len(written) == 5:  # dies on the second record of the second batch
      raise Killed
    written.append(arch)
    return SPACE.to_string(arch)

  def run(estimator, to_string, workdir):
    return search.run(random_search(SPACE, batch_size=4), estimator, 8, jax.random.key(4),
                      workdir=str(workdir), show_progress=False, executor=RayExecutor(num_workers=2),
                      to_string=to_string)

  whole = search.run(random_search(SPACE, batch_size=4), deterministic, 8, jax.random.key(4),
                     show_progress=False, to_string=SPACE.to_string)
  (tmp_path / "attempts").mkdir()
  estimator = Counted(tmp_path / "attempts")
  with pytest.raises(Killed):
    run(estimator, to_string_then_die, tmp_path / "search")
  assert (tmp_path / "search" / "evaluations.jsonl").read_text().count("\n") == 5
  resumed = run(estimator, SPACE.to_string, tmp_path / "search")
  assert strip(resumed["history"]) == strip(whole["history"])
  for record in resumed["history"][:5]:
    assert estimator.count(record["arch"]) == 1  # logged before the kill: never evaluated again


def test_deferred_builds_once_per_worker_and_resumes_a_serial_log(cluster, tmp_path):
  builds = tmp_path / "builds"
  builds.mkdir()
  estimator = deferred(make_counting_estimator, builds)
  whole = search_with(deterministic, "serial", budget=9, workdir=tmp_path / "whole")
  # A serial search 'killed' after 4 evaluations, resumed on Ray with the deferred estimator.
  search_with(deterministic, "serial", budget=4, workdir=tmp_path / "mixed")
  resumed = search_with(estimator, RayExecutor(num_workers=2), budget=9, workdir=tmp_path / "mixed")
  assert strip(resumed["history"]) == strip(whole["history"])
  pids = {name.split(".")[1] for name in os.listdir(builds)}
  assert 1 <= len(os.listdir(builds)) == len(pids) <= 2 and str(os.getpid()) not in pids


def test_estimator_workers_cannot_load_is_a_clear_error(cluster, tmp_path):
  module_dir = tmp_path / "private_module"
  module_dir.mkdir()
  (module_dir / "nasjax_test_private_estimator.py").write_text(
      "def estimate(arch, key):\n  return {'accuracy': 0.5}\n")
  sys.path.insert(0, str(module_dir))
  try:
    import nasjax_test_private_estimator as private
    with pytest.raises(NasjaxError, match="cannot load the estimator.*deferred"):
      search_with(private.estimate, RayExecutor(num_workers=2), budget=2, batch_size=2)
  finally:
    sys.path.remove(str(module_dir))
    sys.modules.pop("nasjax_test_private_estimator", None)


@pytest.mark.parametrize("kwargs,message", [
    ({"num_workers": 0}, "num_workers must be a positive int"),
    ({"max_retries": -1}, "max_retries must be an int >= 0"),
    ({"resources_per_trial": {"num_cpus": -1}}, "amounts must be numbers >= 0"),
    ({"resources_per_trial": [1]}, "resources_per_trial must be a dict"),
])
def test_bad_executor_arguments(kwargs, message):
  with pytest.raises(NasjaxError, match=message):
    RayExecutor(**kwargs)
