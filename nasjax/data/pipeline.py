"""Deterministic splitting, subsetting, batching and device sharding of in-memory data sets.

Everything here is a pure function of its inputs and a seed, so a search or training run can be resumed
from a checkpoint (epoch, step) and see exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nasjax.errors import NasjaxError

DATA_AXIS = "data"


def _check_xy(x, y, fn: str) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x), np.asarray(y)
  if y.ndim != 1:
    raise NasjaxError(f"{fn}: labels must be 1-D (N,); got shape {y.shape}.")
  if x.ndim < 1 or x.shape[0] != y.shape[0]:
    raise NasjaxError(
        f"{fn}: x has {x.shape[0] if x.ndim else 0} examples but y has {y.shape[0]}; they must match."
    )
  if y.dtype.kind not in "ui":
    raise NasjaxError(f"{fn}: labels must be integers; got dtype {y.dtype}.")
  if y.shape[0] == 0:
    raise NasjaxError(f"{fn}: the data set is empty.")
  return x, y


def _check_seed(seed, fn: str) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise NasjaxError(f"{fn}: seed must be a non-negative int; got {seed!r}.")
  return int(seed)


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
  """Integer shares of `total` proportional to `weights`, summing exactly to `total`."""
  exact = weights / weights.sum() * total
  share = np.floor(exact).astype(np.int64)
  # Ties go to the lower class index (stable argsort), keeping the result deterministic.
  order = np.argsort(-(exact - share), kind="stable")
  share[order[:total - share.sum()]] += 1
  return share


def train_valid_split(x, y, valid_fraction: float = 0.5, seed: int = 0):
  """Splits a training set into class-stratified train and validation parts.

  DARTS (Liu, Simonyan & Yang 2019) searches on the CIFAR-10 training set split half/half into a part for
  the weights and a part for the architecture; ``valid_fraction=0.5`` reproduces that, stratified by class
  so both halves keep the class proportions. The validation size is ``round(N * valid_fraction)``, shared
  among classes by the largest-remainder method; which examples go where depends only on ``seed``. Both
  parts keep the original relative order of the examples.

  Args:
    x: (N, ...) inputs.
    y: (N,) integer labels.
    valid_fraction: fraction of examples for validation, strictly between 0 and 1.
    seed: non-negative int.

  Returns:
    (x_train, y_train, x_valid, y_valid) as numpy arrays.
  """
  x, y = _check_xy(x, y, "train_valid_split")
  seed = _check_seed(seed, "train_valid_split")
  is_number = isinstance(valid_fraction, (int, float, np.floating)) and not isinstance(valid_fraction, bool)
  if not is_number or not 0.0 < float(valid_fraction) < 1.0:
    raise NasjaxError(
        f"train_valid_split: valid_fraction must be a number strictly between 0 and 1; got {valid_fraction!r}."
    )
  n = y.shape[0]
  n_valid = int(round(n * float(valid_fraction)))
  if not 0 < n_valid < n:
    raise NasjaxError(
        f"train_valid_split: valid_fraction {valid_fraction} of {n} examples leaves "
        f"{'no validation' if n_valid == 0 else 'no training'} examples; use more data or another fraction."
    )
  classes, counts = np.unique(y, return_counts=True)
  per_class = _largest_remainder(counts.astype(np.float64), n_valid)
  rng = np.random.default_rng(seed)
  valid_mask = np.zeros(n, bool)
  for c, k in zip(classes, per_class):
    idx = np.flatnonzero(y == c)
    valid_mask[rng.permutation(idx)[:k]] = True
  return x[~valid_mask], y[~valid_mask], x[valid_mask], y[valid_mask]


def subset(x, y, size: float | int, seed: int = 0):
  """A class-balanced, deterministic subset, e.g. for low-fidelity performance estimation.

  Each class present in ``y`` gets the same number of examples where it has enough; classes that run
  short give their share to the others, so the result has exactly the requested size. Leftover examples
  after an even share go to the lowest class indices. Examples keep their original relative order.

  Args:
    x: (N, ...) inputs.
    y: (N,) integer labels.
    size: a float in (0, 1] is a fraction of N (rounded); an int >= 1 is a count (at most N).
    seed: non-negative int; the choice depends only on it and the data.

  Returns:
    (x_subset, y_subset) as numpy arrays.
  """
  x, y = _check_xy(x, y, "subset")
  seed = _check_seed(seed, "subset")
  n = y.shape[0]
  if isinstance(size, (bool, np.bool_)):
    raise NasjaxError(f"subset: size must be a fraction in (0, 1] or a count >= 1; got {size!r}.")
  if isinstance(size, (int, np.integer)):
    count = int(size)
    if not 1 <= count <= n:
      raise NasjaxError(f"subset: count must be between 1 and the number of examples ({n}); got {count}.")
  elif isinstance(size, (float, np.floating)):
    if not 0.0 < float(size) <= 1.0:
      raise NasjaxError(f"subset: fraction must be in (0, 1]; got {size!r}.")
    count = int(round(n * float(size)))
    if count == 0:
      raise NasjaxError(f"subset: fraction {size} of {n} examples selects none; use a larger fraction.")
  else:
    raise NasjaxError(f"subset: size must be a fraction (float in (0, 1]) or a count (int >= 1); got {size!r}.")

  classes, counts = np.unique(y, return_counts=True)
  quota = _balanced_quota(counts, count)
  rng = np.random.default_rng(seed)
  keep = np.zeros(n, bool)
  for c, k in zip(classes, quota):
    idx = np.flatnonzero(y == c)
    keep[rng.permutation(idx)[:k]] = True
  return x[keep], y[keep]


def _balanced_quota(available: np.ndarray, total: int) -> np.ndarray:
  """Equal shares of `total` capped by `available`, the surplus of small classes spread over the others."""
  quota = np.zeros_like(available)
  remaining = total
  open_ = np.ones(available.shape[0], bool)
  while remaining > 0:
    share = remaining // open_.sum()
    if share == 0:
      # Fewer units than open classes: one each, lowest class indices first.
      for i in np.flatnonzero(open_)[:remaining]:
        quota[i] += 1
      break
    capped = open_ & (available - quota <= share)
    if capped.any():
      # Classes that cannot take a full share get all they have and close.
      remaining -= int((available - quota)[capped].sum())
      quota[capped] = available[capped]
      open_ &= ~capped
    else:
      quota[open_] += share
      remaining -= share * int(open_.sum())
  return quota


class Batcher:
  """Deterministic, resumable mini-batches of numpy arrays.

  The order of epoch ``e`` is a permutation drawn from ``numpy.random.default_rng([seed, e])``, so it
  depends only on (seed, epoch): ``epoch(e, start_step=s)`` yields exactly the batches ``s, s+1, ...`` that
  an uninterrupted ``epoch(e)`` would, which is what a resume from a checkpoint needs.

  Args:
    x: (N, ...) inputs.
    y: (N, ...) targets.
    batch_size: examples per batch, 1..N.
    seed: non-negative int.
    drop_remainder: drop the last incomplete batch (keeps shapes static under jit); otherwise the last
      batch is smaller.
  """

  def __init__(self, x, y, batch_size: int, seed: int = 0, drop_remainder: bool = True):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
      raise NasjaxError(f"Batcher: x has shape {x.shape} and y has shape {y.shape}; their first axes must match.")
    n = x.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise NasjaxError(f"Batcher: batch_size must be a positive int; got {batch_size!r}.")
    if batch_size > n:
      raise NasjaxError(
          f"Batcher: batch_size {batch_size} is larger than the number of examples ({n}); use a batch size "
          f"of at most {n} or more data."
      )
    self.x, self.y = x, y
    self.batch_size = int(batch_size)
    self.seed = _check_seed(seed, "Batcher")
    self.drop_remainder = bool(drop_remainder)

  @property
  def num_examples(self) -> int:
    return int(self.x.shape[0])

  @property
  def steps_per_epoch(self) -> int:
    n, b = self.num_examples, self.batch_size
    return n // b if self.drop_remainder else -(-n // b)

  def __len__(self) -> int:
    return self.steps_per_epoch

  def permutation(self, epoch_index: int) -> np.ndarray:
    """The example order of one epoch; a function of (seed, epoch_index) only."""
    epoch_index = _check_seed(epoch_index, "Batcher.epoch (epoch_index)")
    return np.random.default_rng([self.seed, epoch_index]).permutation(self.num_examples)

  def epoch(self, epoch_index: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (x, y) batches of epoch ``epoch_index``, starting at batch ``start_step``.

    Raises:
      NasjaxError: immediately (not on first ``next``) for a negative epoch or a step outside
        0..steps_per_epoch.
    """
    perm = self.permutation(epoch_index)
    steps = self.steps_per_epoch
    if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) or not 0 <= start_step <= steps:
      raise NasjaxError(f"Batcher.epoch: start_step must be an int in 0..{steps}; got {start_step!r}.")
    return self._batches(perm, int(start_step), steps)

  def _batches(self, perm, start_step, steps):
    b = self.batch_size
    for step in range(start_step, steps):
      idx = perm[step * b:(step + 1) * b]
      yield self.x[idx], self.y[idx]


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over ``devices`` with the single axis ``"data"``.

  The default is every device of the job: this process's devices, or, in a multi-process
  ``jax.distributed`` job, all processes' devices ordered by process
  (:func:`nasjax.parallel.distributed.global_mesh`), so the same training and search loops run on one
  host or many.
  """
  if devices is None and jax.process_count() > 1:
    from nasjax.parallel import distributed  # pylint: disable=import-outside-toplevel
    return distributed.global_mesh()
  devices = list(jax.local_devices() if devices is None else devices)
  if not devices:
    raise NasjaxError("data_mesh: the device list is empty; pass at least one device (or None for all).")
  return Mesh(np.array(devices), (DATA_AXIS,))


def _mesh_size(mesh: Mesh) -> int:
  if not isinstance(mesh, Mesh) or DATA_AXIS not in mesh.axis_names:
    raise NasjaxError(f"expected a jax.sharding.Mesh with an axis named {DATA_AXIS!r} (see data_mesh); got {mesh!r}.")
  return int(mesh.shape[DATA_AXIS])


def _spans_processes(mesh: Mesh) -> bool:
  here = jax.process_index()
  return any(d.process_index != here for d in mesh.devices.flat)


def shard_batch(batch, mesh: Mesh):
  """Places every array of a batch pytree on the mesh, split along its leading (batch) axis.

  On a mesh over several processes every process passes the same global batch and supplies only its own
  devices' rows (:func:`nasjax.parallel.distributed.global_batch`).

  Raises:
    NasjaxError: a leaf has no batch axis, or its batch size is not divisible by the device count.
  """
  n_dev = _mesh_size(mesh)
  if _spans_processes(mesh):
    from nasjax.parallel import distributed  # pylint: disable=import-outside-toplevel
    return distributed.global_batch(batch, mesh)
  sharding = NamedSharding(mesh, P(DATA_AXIS))

  def put(leaf):
    shape = np.shape(leaf)
    if len(shape) == 0:
      raise NasjaxError("shard_batch: every array in the batch needs a leading batch axis; got a scalar.")
    if shape[0] % n_dev:
      raise NasjaxError(
          f"shard_batch: batch size {shape[0]} is not divisible by the number of devices ({n_dev}); use a "
          f"batch size that is a multiple of {n_dev}."
      )
    return jax.device_put(leaf, sharding)

  return jax.tree_util.tree_map(put, batch)


def replicate(tree, mesh: Mesh):
  """Places a full copy of every array of ``tree`` on every device of the mesh (parameters, optimiser state).

  On a mesh over several processes every process must pass the same values (same seed).
  """
  _mesh_size(mesh)
  if _spans_processes(mesh):
    from nasjax.parallel import distributed  # pylint: disable=import-outside-toplevel
    return distributed.replicate_global(tree, mesh)
  return jax.device_put(tree, NamedSharding(mesh, P()))
