"""Tests of nasjax.parallel.distributed.

In-process tests use the 4 fake CPU devices of conftest.py (one process). The multi-host tests start a real
two-process ``jax.distributed`` job on 127.0.0.1 (2 CPU devices per process, Gloo collectives) and compare
it with the same script run as one process with 4 devices.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.parallel import distributed as dist

REPO = Path(__file__).resolve().parents[1]

needs_gloo = pytest.mark.skipif(not dist.cpu_collectives_available("gloo"),
                                reason="this jaxlib has no Gloo CPU collectives, so a multi-process CPU job "
                                       "cannot all-reduce")


# ------------------------------------------------------------------------------------------ one process
def _mesh4():
  if jax.device_count() < 4:
    pytest.skip("needs 4 CPU devices (conftest.py sets XLA_FLAGS before JAX starts)")
  return dist.global_mesh(jax.devices()[:4])


def test_global_batch_equals_shard_batch_on_one_process():
  mesh = _mesh4()
  rng = np.random.default_rng(0)
  batch = {"x": rng.normal(size=(8, 3, 2)).astype(np.float32), "y": rng.integers(0, 10, 8).astype(np.int32)}
  got, want = dist.global_batch(batch, mesh), nasdata.shard_batch(batch, mesh)
  for key in batch:
    assert got[key].sharding.is_equivalent_to(want[key].sharding, batch[key].ndim)
    assert got[key].dtype == want[key].dtype
    np.testing.assert_array_equal(np.asarray(got[key]), batch[key])
    for g, w in zip(got[key].addressable_shards, want[key].addressable_shards):
      assert g.device == w.device and g.index == w.index
      np.testing.assert_array_equal(np.asarray(g.data), batch[key][g.index])


def test_global_batch_canonicalizes_dtype_like_device_put():
  mesh = _mesh4()
  x = np.arange(8, dtype=np.float64)
  assert dist.global_batch(x, mesh).dtype == nasdata.shard_batch(x, mesh).dtype == jnp.float32


def test_global_batch_rejects_bad_input():
  mesh = _mesh4()
  with pytest.raises(NasjaxError, match="not divisible by the 4 devices"):
    dist.global_batch(np.zeros((6, 2), np.float32), mesh)
  with pytest.raises(NasjaxError, match="leading batch axis"):
    dist.global_batch({"x": np.zeros((8,)), "t": np.float32(1.0)}, mesh)
  with pytest.raises(NasjaxError, match="axis named 'data'"):
    dist.global_batch(np.zeros((8,)), jax.sharding.Mesh(np.array(jax.devices()[:4]), ("model",)))


def test_replicate_global_equals_replicate_and_keeps_keys():
  mesh = _mesh4()
  key = jax.random.key(3)
  tree = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(7), "key": key, "np": np.ones(3, np.int32)}
  got, want = dist.replicate_global(tree, mesh), nasdata.replicate(tree, mesh)
  for name in ("w", "step", "np"):
    assert got[name].sharding.is_equivalent_to(want[name].sharding, np.ndim(tree[name]))
    assert got[name].is_fully_replicated
    for shard in got[name].addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(tree[name]))
  assert jax.dtypes.issubdtype(got["key"].dtype, jax.dtypes.prng_key)
  assert got["key"].is_fully_replicated
  np.testing.assert_array_equal(jax.random.key_data(got["key"]), jax.random.key_data(key))
  np.testing.assert_array_equal(jax.random.uniform(got["key"], (4,)), jax.random.uniform(key, (4,)))
  again = dist.replicate_global(got, mesh)
  assert again["w"] is got["w"]


def test_to_host_round_trip():
  mesh = _mesh4()
  batch = np.arange(24, dtype=np.float32).reshape(8, 3)
  state = {"b": batch, "k": jax.random.key(1)}
  host = dist.to_host({"b": dist.global_batch(batch, mesh), "r": dist.replicate_global(state, mesh)})
  np.testing.assert_array_equal(host["b"], batch)
  np.testing.assert_array_equal(host["r"]["b"], batch)
  np.testing.assert_array_equal(host["r"]["k"], jax.random.key_data(jax.random.key(1)))


def test_global_mesh_and_process_rows_on_one_process():
  mesh = _mesh4()
  assert mesh.axis_names == ("data",) and mesh.shape["data"] == 4
  assert [d.id for d in mesh.devices.flat] == sorted(d.id for d in jax.devices()[:4])
  assert dist.process_rows(12, mesh) == slice(0, 12)
  assert dist.is_main_process()
  assert dist.info() == dist.ProcessInfo(0, 1, jax.local_device_count(), jax.device_count())
  with pytest.raises(NasjaxError, match="not divisible"):
    dist.process_rows(10, mesh)
  with pytest.raises(NasjaxError, match="positive int"):
    dist.process_rows(0, mesh)
  with pytest.raises(NasjaxError, match="empty"):
    dist.global_mesh([])


def test_global_mesh_orders_devices_by_process_and_id():
  if jax.device_count() < 4:
    pytest.skip("needs 4 CPU devices")
  devices = jax.devices()[:4]
  shuffled = [devices[2], devices[0], devices[3], devices[1]]
  assert [d.id for d in dist.global_mesh(shuffled).devices.flat] == [d.id for d in devices]
  # On one process every device is ours, so any order holds all rows as one block.
  assert dist.process_rows(8, jax.sharding.Mesh(np.array(shuffled), ("data",))) == slice(0, 8)


@pytest.mark.parametrize("kwargs, env, message", [
    (dict(num_processes=0), {}, "num_processes must be an int >= 1"),
    (dict(num_processes=2, process_id=2, coordinator_address="127.0.0.1:1234"), {}, r"process_id must be in \[0, 2\)"),
    (dict(num_processes=1, process_id=1), {}, r"process_id must be in \[0, 1\)"),
    (dict(num_processes=2, process_id=0), {}, "needs the coordinator"),
    (dict(num_processes=2, coordinator_address="127.0.0.1:1234"), {}, "needs this process's id"),
    (dict(num_processes=2, process_id=0, coordinator_address="localhost"), {}, "'host:port'"),
    (dict(num_processes=2, process_id=0, coordinator_address="h:99999"), {}, "port in 1..65535"),
    (dict(local_device_count=0), {}, "local_device_count must be an int >= 1"),
    (dict(cpu_collectives="nccl"), {}, "cpu_collectives must be one of"),
    (dict(process_id=True), {}, "process_id must be an int"),
    ({}, {"NASJAX_NUM_PROCESSES": "two"}, "NASJAX_NUM_PROCESSES='two' is not an integer"),
    ({}, {"NASJAX_NUM_PROCESSES": "2", "NASJAX_PROCESS_ID": "5"}, r"process_id must be in \[0, 2\)"),
    ({}, {"NASJAX_NUM_PROCESSES": "2", "NASJAX_PROCESS_ID": "1"}, "needs the coordinator"),
])
def test_initialize_rejects_inconsistent_settings(monkeypatch, kwargs, env, message):
  for name in (dist.ENV_COORDINATOR, dist.ENV_NUM_PROCESSES, dist.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(NasjaxError, match=message):
    dist.initialize(**kwargs)
  assert not jax.distributed.is_initialized()


def test_initialize_single_process_is_a_no_op(monkeypatch):
  for name in (dist.ENV_COORDINATOR, dist.ENV_NUM_PROCESSES, dist.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  jax.devices()  # JAX is running: asking for the device count it already has is fine, another is not
  assert dist.initialize(local_device_count=jax.local_device_count()) == dist.info()
  assert dist.initialize(num_processes=1, process_id=0) == dist.ProcessInfo(0, 1, jax.local_device_count(),
                                                                            jax.device_count())
  assert not jax.distributed.is_initialized()
  with pytest.raises(NasjaxError, match="already running with"):
    dist.initialize(local_device_count=jax.local_device_count() + 1)


def test_initialize_multi_process_after_jax_started_is_a_clear_error(monkeypatch):
  for name in (dist.ENV_COORDINATOR, dist.ENV_NUM_PROCESSES, dist.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  jax.devices()
  # jax.distributed refuses before it opens any connection, so nothing is started here.
  with pytest.raises(NasjaxError, match="before any other JAX call"):
    dist.initialize(f"127.0.0.1:{_free_port()}", 2, 0, timeout_s=5)
  assert not jax.distributed.is_initialized()


def test_cpu_collectives_available():
  assert isinstance(dist.cpu_collectives_available("gloo"), bool)
  assert isinstance(dist.cpu_collectives_available("mpi"), bool)
  with pytest.raises(NasjaxError, match="one of"):
    dist.cpu_collectives_available("nccl")


# ------------------------------------------------------------------------------------------ two processes
# One script for both runs: "--processes 2" is one process of the two-process job (settings from the
# NASJAX_* variables the test sets), "--processes 1" the single-process 4-device reference. Rows owned by
# other processes are overwritten with NaN / invalid labels before global_batch: the job matches the
# reference only if each process contributes exactly its own rows.
_COMMON = """
import json, os, sys, time
import numpy as np
from nasjax.errors import NasjaxError
from nasjax.parallel import distributed as dist

out, processes, local_devices, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.time()
info = dist.initialize(local_device_count=local_devices, timeout_s=120)
assert info.num_processes == processes, info
assert info.local_device_count == local_devices and info.global_device_count == 4, info

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from nasjax import data as nasdata

mesh = dist.global_mesh()
replicated = NamedSharding(mesh, P())
if processes == 2:
  # Starting again with the same settings is harmless; as another process it is an error.
  assert dist.initialize(local_device_count=local_devices) == info
  try:
    dist.initialize(process_id=1 - info.process_id)
    raise AssertionError("initialize accepted a different process id in a running job")
  except NasjaxError as err:
    assert "already running as process" in str(err), err
  # A mesh alternating the processes' devices gives each process two separate blocks of rows: global_batch
  # still places them (the callback is asked per shard), but process_rows cannot name one slice.
  by_process = [[d for d in mesh.devices.flat if d.process_index == p] for p in range(2)]
  interleaved = jax.sharding.Mesh(np.array([d for pair in zip(*by_process) for d in pair]), ("data",))
  try:
    dist.process_rows(8, interleaved)
    raise AssertionError("process_rows accepted an interleaved mesh")
  except NasjaxError:
    pass
  rows = np.arange(8, dtype=np.float32)
  for shard in dist.global_batch(rows, interleaved).addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), rows[shard.index])


def place(batch, num_classes):
  rows = dist.process_rows(batch[0].shape[0], mesh)
  assert rows.stop - rows.start == batch[0].shape[0] * local_devices // 4, rows
  poisoned = []
  for leaf in batch:
    leaf = np.array(leaf)
    foreign = np.ones(leaf.shape[0], bool)
    foreign[rows] = False
    leaf[foreign] = np.nan if leaf.dtype.kind == "f" else num_classes + 7
    poisoned.append(leaf)
  placed = dist.global_batch(tuple(poisoned), mesh)
  for clean, arr in zip(batch, placed):
    assert len(arr.addressable_shards) == local_devices
    for shard in arr.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), clean[shard.index])
  return placed


def finish(result, timings):
  # Every process keeps its replica (to check they agree); only the main process writes the result.
  flat = {k: np.asarray(v) for k, v in result.items()}
  np.savez(os.path.join(out, f"replica_{jax.process_index()}.npz"), **flat)
  if dist.is_main_process():
    np.savez(os.path.join(out, "result.npz"), **flat)
    with open(os.path.join(out, "timings.json"), "w") as f:
      json.dump(timings, f)
  dist.shutdown()
"""

_CNN_SCRIPT = _COMMON + """
import flax.linen as nn
import optax


class TinyCNN(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    x = nn.Conv(6, (3, 3), strides=2)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x).mean(axis=(1, 2))
    return nn.Dense(3)(x)


rng = np.random.default_rng(0)
x_all = rng.uniform(size=(32, 6, 6, 1)).astype(np.float32)
y_all = rng.integers(0, 3, 32).astype(np.int32)
batcher = nasdata.Batcher(x_all, y_all, batch_size=8, seed=1)

model = TinyCNN()
# Parameters drawn with numpy from the shapes Flax reports: compiling Flax's random initialisers would take
# longer than the training steps on a loaded CPU, and it is the training that is under test.
shapes = jax.eval_shape(lambda key, x: model.init(key, x, train=False), jax.random.key(0), jnp.zeros((2, 6, 6, 1)))
variables = jax.tree.map(lambda s: rng.normal(scale=0.5, size=s.shape).astype(s.dtype), shapes)
variables["batch_stats"] = jax.tree.map(np.abs, variables["batch_stats"])  # variances must be positive
tx = optax.sgd(0.1, momentum=0.9)
state = {"params": variables["params"], "batch_stats": variables["batch_stats"],
         "opt": tx.init(variables["params"])}
state = dist.replicate_global(state, mesh)


def loss_fn(params, batch_stats, x, y):
  logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                mutable=["batch_stats"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates["batch_stats"]


def step(state, x, y):
  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], state["batch_stats"],
                                                                         x, y)
  updates, opt = tx.update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  return {"params": params, "batch_stats": batch_stats, "opt": opt}, loss


step = jax.jit(step, out_shardings=replicated)
t_setup = time.time() - t0
losses, t_first = [], None
for _, (xb, yb) in zip(range(steps), batcher.epoch(0)):
  xg, yg = place((xb, yb), 3)
  state, loss = step(state, xg, yg)
  losses.append(float(loss))
  if t_first is None:
    t_first = time.time() - t0
host_x = dist.to_host(xg)  # a collective across processes: gathers the rows held by the other process
np.testing.assert_array_equal(host_x, xb)
result = {"losses": np.array(losses)}
for path, leaf in jax.tree_util.tree_flatten_with_path({"params": state["params"],
                                                        "batch_stats": state["batch_stats"]})[0]:
  result[jax.tree_util.keystr(path)] = dist.to_host(leaf)
finish(result, {"setup_s": t_setup, "first_step_s": t_first, "total_s": time.time() - t0})
"""

_ONESHOT_SCRIPT = _COMMON + """
from nasjax.oneshot.search import Search, search_config
from nasjax.spaces.cells import CellSpace

space = CellSpace("tiny", ("skip_connect", "conv_1x1"), 2, True)
cfg = search_config("darts")
cfg.update(channels=4, layers=2, batch_size=8)
search = Search(cfg, space, (8, 8, 1), 10, (0.5,), (0.25,), steps_per_epoch=4, mesh=mesh)
state = dist.replicate_global(search.init_state(), mesh)
t_setup = time.time() - t0
rng = np.random.default_rng(0)
losses, t_first = [], None
for i in range(steps):
  xt, xv = (rng.uniform(size=(8, 8, 8, 1)).astype(np.float32) for _ in range(2))
  yt, yv = (rng.integers(0, 10, 8).astype(np.int32) for _ in range(2))
  state, metrics = search.step(state, *place((xt, yt, xv, yv), 10))
  losses.append(float(metrics["loss"]))
  if t_first is None:
    t_first = time.time() - t0
result = {"losses": np.array(losses)}
host = dist.to_host({"params": state["params"], "batch_stats": state["batch_stats"], "arch": state["arch"]})
for path, leaf in jax.tree_util.tree_flatten_with_path(host)[0]:
  result[jax.tree_util.keystr(path)] = leaf
finish(result, {"setup_s": t_setup, "first_step_s": t_first, "total_s": time.time() - t0})
"""


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _worker_env(local_devices: int, **nasjax_vars) -> dict:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("NASJAX_", "JAX_", "XLA_")) and "_proxy" not in k.lower()}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
             **{k: str(v) for k, v in nasjax_vars.items()})
  return env


def _run_jobs(script: str, tmp_path: Path, steps: int, timeout_s: float) -> tuple[Path, Path, dict]:
  """Runs the two-process job and the one-process reference side by side; returns their output dirs."""
  path = tmp_path / "worker.py"
  path.write_text(textwrap.dedent(script))
  multi, single = tmp_path / "multi", tmp_path / "single"
  multi.mkdir()
  single.mkdir()
  port = _free_port()
  procs = {}
  for pid in range(2):
    env = _worker_env(2, NASJAX_COORDINATOR=f"127.0.0.1:{port}", NASJAX_NUM_PROCESSES=2, NASJAX_PROCESS_ID=pid)
    procs[f"process {pid}"] = subprocess.Popen(
        [sys.executable, str(path), str(multi), "2", "2", str(steps)], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  procs["reference"] = subprocess.Popen(
      [sys.executable, str(path), str(single), "1", "4", str(steps)], env=_worker_env(1), cwd=tmp_path,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  start, outputs = time.time(), {}
  try:
    for name, proc in procs.items():
      remaining = max(1.0, timeout_s - (time.time() - start))
      outputs[name] = proc.communicate(timeout=remaining)[0]
  except subprocess.TimeoutExpired:
    for proc in procs.values():
      proc.kill()
    logs = {name: proc.communicate()[0][-3000:] for name, proc in procs.items()}
    pytest.fail(f"distributed job did not finish in {timeout_s} s; output:\n{logs}")
  failed = {name: outputs[name][-4000:] for name, proc in procs.items() if proc.returncode != 0}
  assert not failed, f"worker(s) failed:\n{failed}"
  timings = {"wall_s": time.time() - start,
             "multi": json.loads((multi / "timings.json").read_text()),
             "single": json.loads((single / "timings.json").read_text())}
  return multi, single, timings


def _check_agreement(multi: Path, single: Path, steps: int):
  # Process 0 alone writes the result; both processes hold the same replicated state.
  assert sorted(p.name for p in multi.iterdir()) == ["replica_0.npz", "replica_1.npz", "result.npz",
                                                      "timings.json"]
  got, want = np.load(multi / "result.npz"), np.load(single / "result.npz")
  other = np.load(multi / "replica_1.npz")
  assert sorted(got.files) == sorted(want.files) == sorted(other.files)
  assert got["losses"].shape == (steps,) and np.all(np.isfinite(got["losses"]))
  moved = 0.0
  for name in got.files:
    np.testing.assert_array_equal(got[name], other[name], err_msg=f"process 0 and 1 disagree on {name}")
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)
    if name != "losses":
      moved = max(moved, float(np.abs(got[name]).max()))
  # The training must have done something for the agreement to mean anything.
  assert moved > 0 and not np.allclose(got["losses"][0], got["losses"][-1])


@needs_gloo
def test_two_process_cnn_with_batchnorm_matches_one_process(tmp_path):
  steps = 3
  multi, single, timings = _run_jobs(_CNN_SCRIPT, tmp_path, steps, timeout_s=240)
  _check_agreement(multi, single, steps)
  print(f"\ntwo-process CNN timings: {timings}")


@pytest.mark.slow
@needs_gloo
def test_two_process_darts_search_step_matches_one_process(tmp_path):
  steps = 2
  multi, single, timings = _run_jobs(_ONESHOT_SCRIPT, tmp_path, steps, timeout_s=600)
  _check_agreement(multi, single, steps)
  print(f"\ntwo-process DARTS timings: {timings}")


_SKEW_SCRIPT = """
import sys, time
import numpy as np
from nasjax.parallel import distributed as dist

info = dist.initialize(timeout_s=120)
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

# A process that compiles its first step longer than its peer (here: sleeps) must not fail the job.
if info.process_id == 1:
  time.sleep(float(sys.argv[1]))
mesh = dist.global_mesh()
rows = dist.global_batch(np.arange(8, dtype=np.float32), mesh)
total = jax.jit(lambda v: jnp.sum(v * v), out_shardings=NamedSharding(mesh, P()))(rows)
print("TOTAL", float(total.addressable_data(0)))
dist.shutdown()
"""


@needs_gloo
def test_two_process_job_survives_a_first_collective_skew_over_30_s(tmp_path):
  """XLA:CPU's Gloo communicator gives peers 30 s to meet at the first collective; initialize opens it
  in step, so a process that reaches its first real collective 40 s after its peer still works."""
  script = tmp_path / "skew.py"
  script.write_text(textwrap.dedent(_SKEW_SCRIPT))
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, str(script), "40"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=_worker_env(2, NASJAX_COORDINATOR=f"127.0.0.1:{port}",
                                            NASJAX_NUM_PROCESSES=2, NASJAX_PROCESS_ID=pid))
           for pid in range(2)]
  outputs = [proc.communicate(timeout=240)[0] for proc in procs]
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-3000:]
    assert "TOTAL 140.0" in out, out[-3000:]


def _run_cli(args: list[str], envs: list[dict], cwd: Path, timeout_s: float) -> list[str]:
  procs = [subprocess.Popen([sys.executable, "-m", "nasjax.cli", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for env in envs]
  start, outputs = time.time(), []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=max(1.0, timeout_s - (time.time() - start)))[0])
  except subprocess.TimeoutExpired:
    for proc in procs:
      proc.kill()
    pytest.fail(f"nasjax {' '.join(args)} did not finish in {timeout_s} s: "
                f"{[p.communicate()[0][-3000:] for p in procs]}")
  failed = [out[-4000:] for proc, out in zip(procs, outputs) if proc.returncode != 0]
  assert not failed, f"nasjax {' '.join(args)} failed:\n{failed}"
  return outputs


@pytest.mark.slow
@needs_gloo
def test_two_process_search_command_matches_one_process(tmp_path):
  """``nasjax search --method darts`` as a two-process job on 127.0.0.1 (2 devices each, one shared --out
  as on a shared file system) finds what one process with 4 devices finds, epoch by epoch; process 0 alone
  writes the result and the log, and the checkpoints are whole."""
  rng = np.random.default_rng(0)
  data = tmp_path / "tiny.npz"
  np.savez(data, x_train=rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8), y_train=rng.integers(0, 10, 64),
           x_test=rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8), y_test=rng.integers(0, 10, 16))
  common = ["search", "--method", "darts", "--config", "demo", "--data", str(data), "--channels", "2",
            "--layers", "3", "--batch-size", "8", "--epochs", "2", "--train-subset", "0", "--quiet"]
  multi, single = tmp_path / "multi", tmp_path / "single"
  port = _free_port()
  envs = [_worker_env(2, NASJAX_COORDINATOR=f"127.0.0.1:{port}", NASJAX_NUM_PROCESSES=2, NASJAX_PROCESS_ID=pid)
          for pid in range(2)]
  _run_cli(common + ["--out", str(multi)], envs, tmp_path, timeout_s=900)
  _run_cli(common + ["--out", str(single)], [_worker_env(4)], tmp_path, timeout_s=900)

  got, want = (json.loads((d / "result.json").read_text()) for d in (multi, single))
  assert got["versions"]["processes"] == 2 and want["versions"]["processes"] == 1
  assert got["versions"]["devices"] == want["versions"]["devices"] == 4
  assert got["genotype"] == want["genotype"] and got["arch"] == want["arch"]
  for cell in ("normal", "reduce"):
    np.testing.assert_allclose(got["alphas"][cell], want["alphas"][cell], rtol=1e-4, atol=1e-6)
  logged = [json.loads(line) for line in (multi / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in logged] == [1, 2]  # written once, not once per process
  for mine, theirs in zip(got["history"], want["history"]):
    for key in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy"):
      np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-4, atol=1e-6, err_msg=key)
  # The run must have moved the architecture for the agreement to mean anything.
  assert not np.allclose(np.asarray(got["alphas"]["normal"]), 1 / len(got["alphas"]["normal"][0]))
  assert sorted(p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "8"]
