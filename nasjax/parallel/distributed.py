"""Multi-host data parallelism: one global device mesh over every process of a ``jax.distributed`` job.

Synchronous data-parallel SGD (Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
arXiv 2017) computes the one-device step on a global batch split across workers; with GSPMD (Xu et al.,
"GSPMD: General and Scalable Parallelization for ML Computation Graphs", arXiv 2021) the *same* jitted
step nasjax runs on one host's ``data`` mesh runs on a mesh spanning hosts, and XLA inserts the
cross-process all-reduces, including the ones that make BatchNorm see the global batch (cross-GPU
BatchNorm, Peng et al., "MegDet: A Large Mini-Batch Object Detector", CVPR 2018). So multi-host training
needs only three things from this module:

- :func:`initialize` starts the distributed runtime (and, on CPU, the Gloo collectives that XLA's CPU
  backend needs for cross-process all-reduce) from arguments or ``NASJAX_*`` environment variables;
- :func:`global_mesh` is the 1-D ``"data"`` mesh over all devices of all processes, ordered by process so
  each process owns one contiguous block of rows (:func:`process_rows`);
- :func:`global_batch` / :func:`replicate_global` turn host data into global ``jax.Array`` s in which each
  process supplies only the shards on its own devices. Every process reads the same global batch from the
  deterministic :class:`nasjax.data.Batcher` (same seed), so no data moves between hosts; rows owned by
  other processes are never read, which is also what lets a loader fill only its own rows.

With one process all of this reduces to :func:`nasjax.data.shard_batch` and :func:`nasjax.data.replicate`
on the local mesh, so code written against this module runs unchanged on a laptop.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nasjax.errors import NasjaxError

DATA_AXIS = "data"  # the axis name of nasjax.data.data_mesh, so steps written for one host run unchanged
ENV_COORDINATOR = "NASJAX_COORDINATOR"
ENV_NUM_PROCESSES = "NASJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "NASJAX_PROCESS_ID"
CPU_COLLECTIVES = ("gloo", "mpi")


class ProcessInfo(NamedTuple):
  """Where this process stands in the job once :func:`initialize` has run."""
  process_id: int
  num_processes: int
  local_device_count: int
  global_device_count: int


# ------------------------------------------------------------------------------------------ start-up
def _env_int(name: str) -> int | None:
  raw = os.environ.get(name)
  if raw is None or raw.strip() == "":
    return None
  try:
    return int(raw.strip())
  except ValueError:
    raise NasjaxError(f"environment variable {name}={raw!r} is not an integer; set it to a whole number.") from None


def _check_count(what: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise NasjaxError(f"initialize: {what} must be an int >= {minimum}; got {value!r}.")
  return int(value)


def _check_address(address) -> str:
  """``host:port`` as jax.distributed expects it; caught here so a typo fails at once, not at a timeout."""
  if not isinstance(address, str) or ":" not in address:
    raise NasjaxError(f"initialize: coordinator address must be 'host:port' (e.g. '10.0.0.1:1234'); got {address!r}.")
  host, port = address.rsplit(":", 1)
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise NasjaxError(
        f"initialize: coordinator address must be 'host:port' with a port in 1..65535; got {address!r}.")
  return address


def cpu_collectives_available(implementation: str = "gloo") -> bool:
  """Whether this jaxlib was built with the named cross-process CPU collectives (``gloo`` or ``mpi``)."""
  if implementation not in CPU_COLLECTIVES:
    raise NasjaxError(f"cpu_collectives_available: implementation must be one of {CPU_COLLECTIVES}; "
                      f"got {implementation!r}.")
  try:
    from jax._src.lib import _jax  # the factory functions live only in jaxlib's extension module
  except ImportError:
    return False
  return hasattr(_jax, f"make_{implementation}_tcp_collectives" if implementation == "gloo"
                 else f"make_{implementation}_collectives")


def _set_local_device_count(count: int) -> None:
  """Asks the CPU backend for ``count`` devices; accelerators have the devices they have (checked later)."""
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:
    # The backend already exists (jax refuses late changes); fine if it already has what was asked for.
    if jax.local_device_count() != count:
      raise NasjaxError(
          f"initialize: local_device_count={count} was asked for, but JAX is already running with "
          f"{jax.local_device_count()} local devices; call initialize before any other JAX call.") from None


def _already_initialized(num_processes: int, process_id: int) -> ProcessInfo:
  if (jax.process_count(), jax.process_index()) != (num_processes, process_id):
    raise NasjaxError(
        f"initialize: the distributed runtime is already running as process {jax.process_index()} of "
        f"{jax.process_count()}; it cannot be restarted as process {process_id} of {num_processes}.")
  return info()


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_count: int | None = None, *,
               cpu_collectives: str | None = None, timeout_s: int = 300) -> ProcessInfo:
  """Starts this process's part of a multi-process job; call it before any other JAX call.

  Arguments left ``None`` are read from ``NASJAX_COORDINATOR`` (``host:port`` of process 0's coordinator
  service), ``NASJAX_NUM_PROCESSES`` and ``NASJAX_PROCESS_ID``. With one process (the default when nothing
  is set) no runtime is started and only ``local_device_count`` is applied, so a script calls this
  unconditionally. Calling it again with the same settings returns the running job's :class:`ProcessInfo`.

  Args:
    coordinator_address: ``host:port`` reachable from every process; process 0 serves on that port.
    num_processes: number of processes in the job (>= 1).
    process_id: this process's index, ``0 <= process_id < num_processes``.
    local_device_count: CPU devices to create in this process (replaces
      ``--xla_force_host_platform_device_count``); on accelerators it is checked against the devices found.
    cpu_collectives: ``"gloo"`` or ``"mpi"`` for cross-process all-reduce on CPU; ``None`` keeps JAX's
      setting, or chooses Gloo if JAX has none (without collectives a multi-process CPU job cannot reduce).
    timeout_s: how long to wait for all processes to join before failing.

  Returns:
    :class:`ProcessInfo` of this process.

  Raises:
    NasjaxError: a setting is malformed or inconsistent (a process id outside ``[0, num_processes)``, a
      multi-process job without a coordinator or process id, an unknown collectives name, JAX already
      started, ...).
  """
  if coordinator_address is None:
    coordinator_address = os.environ.get(ENV_COORDINATOR) or None
  num_processes = _env_int(ENV_NUM_PROCESSES) if num_processes is None else num_processes
  process_id = _env_int(ENV_PROCESS_ID) if process_id is None else process_id
  num_processes = 1 if num_processes is None else _check_count("num_processes", num_processes, 1)
  if process_id is not None:
    process_id = _check_count("process_id", process_id, 0)
    if process_id >= num_processes:
      raise NasjaxError(f"initialize: process_id must be in [0, {num_processes}) for a job of {num_processes} "
                        f"process(es); got {process_id}.")
  if local_device_count is not None:
    local_device_count = _check_count("local_device_count", local_device_count, 1)
  if cpu_collectives is not None and cpu_collectives not in CPU_COLLECTIVES:
    raise NasjaxError(f"initialize: cpu_collectives must be one of {CPU_COLLECTIVES} or None; "
                      f"got {cpu_collectives!r}.")
  timeout_s = _check_count("timeout_s", timeout_s, 1)

  if num_processes == 1:
    if local_device_count is not None:
      _set_local_device_count(local_device_count)
    return info()

  if coordinator_address is None:
    raise NasjaxError(f"initialize: a job of {num_processes} processes needs the coordinator's 'host:port' "
                      f"(argument coordinator_address or ${ENV_COORDINATOR}).")
  coordinator_address = _check_address(coordinator_address)
  if process_id is None:
    raise NasjaxError(f"initialize: a job of {num_processes} processes needs this process's id in "
                      f"[0, {num_processes}) (argument process_id or ${ENV_PROCESS_ID}).")
  if jax.distributed.is_initialized():
    return _already_initialized(num_processes, process_id)

  # Both settings are read when the CPU client is created, so they must precede the first JAX call.
  impl = cpu_collectives or jax.config.jax_cpu_collectives_implementation or "gloo"
  if not cpu_collectives_available(impl):
    raise NasjaxError(f"initialize: this jaxlib has no {impl!r} CPU collectives; install a jaxlib built with "
                      f"them or choose another of {CPU_COLLECTIVES}.")
  try:
    jax.config.update("jax_cpu_collectives_implementation", impl)
    if local_device_count is not None:
      jax.config.update("jax_num_cpu_devices", local_device_count)
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s)
  except RuntimeError as err:
    raise NasjaxError(f"initialize: could not start process {process_id} of {num_processes} "
                      f"(coordinator {coordinator_address}): {err}. Call initialize before any other "
                      f"JAX call, once per process.") from err
  started = info()
  if started.num_processes != num_processes or started.process_id != process_id:
    raise NasjaxError(f"initialize: asked for process {process_id} of {num_processes} but JAX reports "
                      f"{started.process_id} of {started.num_processes}.")
  if local_device_count is not None and started.local_device_count != local_device_count:
    raise NasjaxError(f"initialize: local_device_count={local_device_count} was asked for but this process "
                      f"has {started.local_device_count} {jax.default_backend()} devices.")
  _open_collectives(timeout_s)
  return started


def _open_collectives(timeout_s: int) -> None:
  """Runs one all-reduce over every device of the job, with all processes in step, before any real work.

  XLA:CPU opens its Gloo communicator at the first cross-process collective and gives the peers a fixed
  30 s to meet there (jaxlib 0.10: ``Gloo context initialization failed: DEADLINE_EXCEEDED``; XLA's
  ``--xla_cpu_collective_timeout_seconds`` does not change it). The first collective of a search is inside
  its step, which each process compiles for a minute or more, so a compile-time skew over 30 s killed the
  job. Once open, the communicator waits as long as a peer needs (measured: a 70 s skew passes). So the
  processes meet at a coordination-service barrier (its timeout is ours) and then open the communicator
  with a program that compiles in milliseconds; the sum also proves the collectives work end to end.
  """
  from jax._src import distributed as jax_distributed  # the barrier is only on the runtime's client
  client = jax_distributed.global_state.client
  if client is not None:
    try:
      client.wait_at_barrier("nasjax_open_collectives", timeout_s * 1000)
    except Exception as err:  # noqa: BLE001 -- jaxlib raises its own runtime error type
      raise NasjaxError(f"initialize: not every process reached start-up within {timeout_s} s: {err}") from err
  mesh = global_mesh()
  ones = global_batch(np.ones(mesh.size, np.float32), mesh)
  try:
    total = float(to_host(jax.jit(jax.numpy.sum, out_shardings=NamedSharding(mesh, P()))(ones)))
  except Exception as err:  # noqa: BLE001
    raise NasjaxError(f"initialize: the first cross-process all-reduce failed: {err}") from err
  if total != mesh.size:
    raise NasjaxError(f"initialize: an all-reduce over the job's {mesh.size} devices returned {total}; the "
                      "cross-process collectives are broken.")


def info() -> ProcessInfo:
  """This process's place in the job (a single-process job is process 0 of 1)."""
  return ProcessInfo(jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
  """True on exactly one process (0): the one that writes logs, checkpoints and results."""
  return jax.process_index() == 0


def shutdown() -> None:
  """Leaves the job (all processes should call it at the end); does nothing for a single process."""
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()


# ------------------------------------------------------------------------------------------ mesh
def global_mesh(devices=None) -> Mesh:
  """A 1-D ``"data"`` mesh over ``devices`` (default: every device of every process).

  Devices are ordered by (process, id), so each process's devices hold one contiguous block of the batch
  (:func:`process_rows`): a process that loads only its own rows reads one slice.
  """
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise NasjaxError("global_mesh: the device list is empty; pass at least one device (or None for all).")
  devices.sort(key=lambda d: (d.process_index, d.id))
  return Mesh(np.array(devices), (DATA_AXIS,))


def _data_size(mesh: Mesh, fn: str) -> int:
  if not isinstance(mesh, Mesh) or DATA_AXIS not in mesh.axis_names:
    raise NasjaxError(f"{fn}: expected a jax.sharding.Mesh with an axis named {DATA_AXIS!r} (see global_mesh); "
                      f"got {mesh!r}.")
  return int(mesh.shape[DATA_AXIS])


def process_rows(batch_size: int, mesh: Mesh) -> slice:
  """The rows of a global batch of ``batch_size`` that this process's devices hold on ``mesh``.

  Raises:
    NasjaxError: the batch does not split evenly over the mesh, or this process's devices do not hold one
      contiguous block (a mesh not ordered by process; :func:`global_mesh` always is).
  """
  n_dev = _data_size(mesh, "process_rows")
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise NasjaxError(f"process_rows: batch_size must be a positive int; got {batch_size!r}.")
  if batch_size % n_dev:
    raise NasjaxError(f"process_rows: batch size {batch_size} is not divisible by the {n_dev} devices of the "
                      f"'data' axis; use a multiple of {n_dev}.")
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  indices = sharding.addressable_devices_indices_map((int(batch_size),)).values()
  starts = sorted({idx[0].start or 0 for idx in indices})
  per_device = batch_size // n_dev
  if not starts:
    return slice(0, 0)
  if starts != list(range(starts[0], starts[-1] + 1, per_device)):
    raise NasjaxError("process_rows: this process's devices are not contiguous on the mesh's 'data' axis; "
                      "build the mesh with global_mesh().")
  return slice(starts[0], starts[-1] + per_device)


# ------------------------------------------------------------------------------------------ placement
def _host_array(leaf, fn: str) -> np.ndarray:
  """A numpy copy with JAX's dtype canonicalisation (float64 -> float32 unless x64), as device_put does."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    if not leaf.is_fully_replicated:
      raise NasjaxError(f"{fn}: got a jax.Array sharded across processes; pass host (numpy) data, arrays of "
                        f"this process, or replicated arrays.")
    leaf = leaf.addressable_data(0)  # every process holds the whole value already
  host = np.asarray(leaf)
  return host.astype(jax.dtypes.canonicalize_dtype(host.dtype), copy=False)


def _from_host(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
  # The callback is asked only for the shards of this process's devices: other processes' rows are never read.
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index], dtype=host.dtype)


def global_batch(batch, mesh: Mesh):
  """Global ``jax.Array`` s sharded on ``"data"`` from the full global batch (a pytree of arrays).

  Every process passes the same global batch; each contributes only the rows of its own devices
  (:func:`process_rows`), so the other rows may even be garbage. With one process this is
  :func:`nasjax.data.shard_batch`.

  Raises:
    NasjaxError: a leaf has no batch axis, or its batch size is not divisible by the mesh's ``data`` axis.
  """
  n_dev = _data_size(mesh, "global_batch")
  sharding = NamedSharding(mesh, P(DATA_AXIS))

  def put(leaf):
    host = _host_array(leaf, "global_batch")
    if host.ndim == 0:
      raise NasjaxError("global_batch: every array in the batch needs a leading batch axis; got a scalar.")
    if host.shape[0] % n_dev:
      raise NasjaxError(f"global_batch: batch size {host.shape[0]} is not divisible by the {n_dev} devices of "
                        f"the 'data' axis; use a batch size that is a multiple of {n_dev}.")
    return _from_host(host, sharding)

  return jax.tree_util.tree_map(put, batch)


def replicate_global(tree, mesh: Mesh):
  """A full copy of every array of ``tree`` on every device of every process (parameters, optimiser state).

  Every process must pass the same values (same seed). Typed PRNG keys stay typed keys. Arrays already
  replicated on ``mesh`` are returned as they are. With one process this is :func:`nasjax.data.replicate`.
  """
  _data_size(mesh, "replicate_global")
  sharding = NamedSharding(mesh, P())

  def put(leaf):
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
      return leaf
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      # Keys cannot be copied to numpy; their raw words can, and wrap back into the same key type.
      return jax.random.wrap_key_data(put(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
    return _from_host(_host_array(leaf, "replicate_global"), sharding)

  return jax.tree_util.tree_map(put, tree)


def to_host(tree):
  """Numpy copies of the global values of ``tree`` on every process (gathering shards held elsewhere).

  Replicated arrays are read locally; arrays sharded across processes are all-gathered, which is a
  collective: every process must call this with the same tree.
  """
  from jax.experimental import multihost_utils  # imported late: only multi-process arrays need it

  def get(leaf):
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
      return np.asarray(leaf)
    if leaf.is_fully_replicated:
      return np.asarray(leaf.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

  return jax.tree_util.tree_map(get, tree)
