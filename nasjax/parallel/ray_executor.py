"""A Ray executor for ``nasjax.search.run``: each evaluation of a batch is one Ray task, run concurrently.

Trials that are whole training runs (Zoph & Le, "Neural Architecture Search with Reinforcement Learning",
ICLR 2017; Real et al., "Regularized Evolution for Image Classifier Architecture Search", AAAI 2019) cannot
be vmapped: they are independent processes of minutes to hours, and the only parallelism is running
several at once. Ray (Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI
2018) runs them as tasks on the cores or GPUs of one machine or a cluster; as Tune does for trials (Liaw
et al., "Tune: A Research Platform for Distributed Model Selection and Training", ICML AutoML workshop
2018), a trial whose worker crashed or that raised is retried, and after ``max_retries`` retries it is
recorded as failed (NaN fitness, so it never wins) with the error text, instead of ending the search.
A training whose loss became NaN is a result, not an accident: it is recorded as failed at once.

The driver still owns the log: outcomes come back in ask order, each as soon as it and every evaluation
asked before it have finished, so ``evaluations.jsonl`` stays the checkpoint and a resumed search (with
any executor) never re-trains a logged evaluation. Each evaluation gets the same key it gets serially, so a
deterministic estimator gives the same search on Ray as on the host.

**The estimator must be picklable by Ray** (cloudpickle). Functions and classes of an importable module
(an installed package) are pickled by reference, so that module must be importable on the workers;
lambdas and closures are pickled by value. An estimator holding a dataset would ship its arrays to every
worker; :func:`deferred` ships a factory and its (small) arguments instead and builds the estimator once
per worker process, which is what a training estimator wants::

  from nasjax.parallel.ray_executor import RayExecutor, deferred

  def make_estimator(space_name, cfg):  # runs on the worker: loads the data there
    space = spaces.get_space(space_name)
    return ShortTrainingEstimator(space, data.load_dataset("embedded"), cfg)

  with RayExecutor(num_workers=4, resources_per_trial={"num_cpus": 1, "num_gpus": 0.25}) as ex:
    out = search.run(strategy, deferred(make_estimator, "darts", cfg), 100, key, workdir=w, executor=ex)

A cluster started by the executor (``address=None`` and Ray not yet initialised) is shut down by
``close()``; one already running (``ray.init`` called by the user, or ``address="auto"``) is left alone.
Ray maps a loopback node address to the host's address; to keep a local cluster on 127.0.0.1, set
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the environment before ``ray`` is imported.
"""

from __future__ import annotations

import collections
import time
import uuid
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from nasjax.errors import NasjaxError
from nasjax.search import Outcome, evaluate_one

_ERROR_CHARS = 500  # per attempt; a Ray traceback can run to pages
_BUILT_PER_PROCESS = 4  # estimators a worker keeps built (LRU); each may hold a dataset


# Estimators built in this process by ``Deferred``, keyed by the Deferred's token. A Ray worker runs many
# tasks, so building once per process (not once per task) saves loading data for every evaluation.
_built: collections.OrderedDict[str, Any] = collections.OrderedDict()


class Deferred:
  """An estimator given as ``factory(*args, **kwargs)``: pickles as the recipe, built once per process.

  Calling it evaluates like the built estimator, so the same object serves every executor.
  """

  def __init__(self, factory: Callable, *args: Any, **kwargs: Any):
    if not callable(factory):
      raise NasjaxError(f"deferred() needs a callable factory that returns an estimator, got "
                        f"{type(factory).__name__}")
    self.factory, self.args, self.kwargs = factory, args, kwargs
    self.token = uuid.uuid4().hex

  def build(self) -> Callable:
    """The estimator of this recipe in this process (built on first use)."""
    if self.token in _built:
      _built.move_to_end(self.token)
      return _built[self.token]
    estimator = self.factory(*self.args, **self.kwargs)
    if not callable(estimator):
      raise NasjaxError(f"the factory {getattr(self.factory, '__name__', self.factory)!r} returned "
                        f"{type(estimator).__name__}, not an estimator(arch, key) -> metrics")
    _built[self.token] = estimator
    while len(_built) > _BUILT_PER_PROCESS:
      _built.popitem(last=False)
    return estimator

  def __call__(self, arch, key) -> dict:
    return self.build()(arch, key)

  def __getstate__(self) -> dict:
    return {"factory": self.factory, "args": self.args, "kwargs": self.kwargs, "token": self.token}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)


def deferred(factory: Callable, *args: Any, **kwargs: Any) -> Deferred:
  """An estimator built as ``factory(*args, **kwargs)`` where it runs (once per Ray worker process)."""
  return Deferred(factory, *args, **kwargs)


def _run_trial(estimator: Callable, arch: np.ndarray, key: Any, fitness_key: str) -> Outcome:
  # Runs on a worker. A diverged training comes back as a failed Outcome; anything else raises, and the
  # driver retries it.
  return evaluate_one(estimator, arch, key, fitness_key)


def _probe(estimator: Callable) -> str:
  # Runs on a worker; its only job is to unpickle the estimator there (Ray does that before the call).
  return type(estimator).__name__


_RESOURCE_OPTIONS = ("num_cpus", "num_gpus", "memory")


def _task_options(resources: dict) -> dict:
  if not isinstance(resources, dict):
    raise NasjaxError(f"resources_per_trial must be a dict such as {{'num_cpus': 1, 'num_gpus': 0.5}}, "
                      f"got {type(resources).__name__}")
  options: dict[str, Any] = {}
  custom: dict[str, float] = {}
  for name, amount in resources.items():
    if not isinstance(name, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) \
        or not amount >= 0:
      raise NasjaxError(f"resources_per_trial[{name!r}] = {amount!r}: amounts must be numbers >= 0 "
                        f"(num_cpus, num_gpus, memory in bytes, or a custom Ray resource)")
    if name in _RESOURCE_OPTIONS:
      options[name] = amount
    else:
      custom[name] = float(amount)
  if custom:
    options["resources"] = custom
  return options


class RayExecutor:
  """Runs the evaluations of each asked batch as concurrent Ray tasks; see the module docstring.

  Args:
    num_workers: at most this many evaluations run at once (None: as many as the cluster's resources
      allow). When the executor starts a local cluster, it gets ``num_workers * num_cpus`` CPUs.
    address: a running cluster to connect to (``"auto"``, ``"ray://host:10001"``); None starts a local
      one unless Ray is already initialised in this process.
    max_retries: how often an evaluation whose worker crashed or that raised is retried before it is
      recorded as failed.
    resources_per_trial: Ray resources of one evaluation: ``num_cpus``, ``num_gpus``, ``memory`` (bytes)
      and custom resources; default ``{"num_cpus": 1}``.
    init_kwargs: extra ``ray.init`` arguments for a cluster this executor starts or connects to.
  """
  name = "ray"

  def __init__(self, num_workers: int | None = None, address: str | None = None, max_retries: int = 2,
               resources_per_trial: dict | None = None, init_kwargs: dict | None = None):
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                    or num_workers < 1):
      raise NasjaxError(f"num_workers must be a positive int or None (as many as fit), got {num_workers!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
      raise NasjaxError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if address is not None and not isinstance(address, str):
      raise NasjaxError(f"address must be a Ray address string ('auto', 'ray://host:port') or None, got "
                        f"{address!r}")
    if init_kwargs is not None and not isinstance(init_kwargs, dict):
      raise NasjaxError(f"init_kwargs must be a dict of ray.init arguments, got {type(init_kwargs).__name__}")
    self.num_workers = num_workers
    self.address = address
    self.max_retries = max_retries
    self._options = _task_options({"num_cpus": 1} if resources_per_trial is None else resources_per_trial)
    self.resources_per_trial = dict(resources_per_trial or {"num_cpus": 1})
    self.init_kwargs = dict(init_kwargs or {})
    self._ray = None
    self._started = False
    self._shipped: tuple[Any, Any] | None = None  # (estimator, its object ref), checked on a worker

  # ------------------------------------------------------------------------------------- connection
  def _connect(self):
    try:
      import ray
    except ImportError:
      raise NasjaxError("RayExecutor needs the ray package: pip install 'nasjax[ray]'") from None
    if self._ray is not None and ray.is_initialized():
      return ray
    self._shipped = None  # object refs die with the cluster they were put into
    if not ray.is_initialized():
      kwargs = {"include_dashboard": False}
      if self.address is None and self.num_workers is not None:
        kwargs["num_cpus"] = max(1, int(np.ceil(self.num_workers * self._options.get("num_cpus", 1))))
        if self._options.get("num_gpus"):
          kwargs["num_gpus"] = int(np.ceil(self.num_workers * self._options["num_gpus"]))
      if self.address is not None:
        kwargs = {"address": self.address}
      kwargs.update(self.init_kwargs)
      with warnings.catch_warnings():
        # Ray forks only to exec its daemons at once, which is safe; JAX warns about any fork.
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        ray.init(**kwargs)
      self._started = True
    self._ray = ray
    self._trial = ray.remote(_run_trial).options(max_retries=0, retry_exceptions=False, **self._options)
    self._check = ray.remote(_probe).options(max_retries=0, retry_exceptions=False, **self._options)
    return ray

  def close(self) -> None:
    """Disconnects what this executor's ``ray.init`` connected (a local cluster it started stops);
    a Ray session the caller had initialised is left alone."""
    if self._started and self._ray is not None:
      self._ray.shutdown()
    self._ray, self._started, self._shipped = None, False, None

  def __enter__(self) -> RayExecutor:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _ship(self, estimator: Callable):
    """The estimator's object ref, after proving once that a worker can unpickle it.

    Without that check, an estimator whose module the workers cannot import would fail every evaluation
    after all its retries, and the search would end with every architecture 'failed'.
    """
    if self._shipped is not None and self._shipped[0] is estimator:
      return self._shipped[1]
    ray = self._ray
    ref = ray.put(estimator)
    try:
      ray.get(self._check.remote(ref))
    except ray.exceptions.RayError as e:
      raise NasjaxError(f"a Ray worker cannot load the estimator ({_describe(e, ray)}); define it in a "
                        "module the workers can import, or pass deferred(factory, *args) from "
                        "nasjax.parallel.ray_executor") from None
    self._shipped = (estimator, ref)
    return ref

  # ------------------------------------------------------------------------------------- evaluation
  def evaluate(self, estimator: Callable, archs: np.ndarray, keys: list, fitness_key: str
               ) -> Iterator[Outcome]:
    """Yields one :class:`Outcome` per row of ``archs``, in order, while later rows still run."""
    ray = self._connect()
    estimator_ref = self._ship(estimator)
    n = len(archs)
    archs = np.asarray(archs)
    attempts = [0] * n
    errors: list[list[str]] = [[] for _ in range(n)]
    first_submit = [0.0] * n
    outcomes: list[Outcome | None] = [None] * n
    waiting = collections.deque(range(n))
    running: dict[Any, int] = {}
    next_out = 0
    try:
      while next_out < n:
        while waiting and (self.num_workers is None or len(running) < self.num_workers):
          i = waiting.popleft()
          attempts[i] += 1
          if attempts[i] == 1:
            first_submit[i] = time.perf_counter()
          running[self._trial.remote(estimator_ref, archs[i], keys[i], fitness_key)] = i
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
          i = running.pop(ref)
          try:
            outcomes[i] = ray.get(ref)._replace(attempts=attempts[i])
          except ray.exceptions.RayError as e:
            errors[i].append(f"attempt {attempts[i]}: {_describe(e, ray)}")
            if attempts[i] <= self.max_retries:
              waiting.appendleft(i)  # first in line: the log waits for it
            else:
              text = "; ".join(errors[i])
              outcomes[i] = Outcome({"error": text}, True, time.perf_counter() - first_submit[i], text,
                                    attempts[i])
        while next_out < n and outcomes[next_out] is not None:
          yield outcomes[next_out]
          outcomes[next_out] = None
          next_out += 1
    finally:
      # The search stopped early (interrupted, or the driver failed): trials nobody will log are wasted
      # compute, so stop them.
      for ref in running:
        ray.cancel(ref, force=True)


def _describe(error: BaseException, ray) -> str:
  """One line (or a few) for the log: the user's exception where there is one, not Ray's wrapping."""
  cause = getattr(error, "cause", None)
  if isinstance(error, ray.exceptions.RayTaskError) and isinstance(cause, BaseException) \
      and not isinstance(cause, ray.exceptions.RayError):
    text = f"{type(cause).__name__}: {cause}"
  else:
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    for line in lines[1:]:
      if "Error" in line or "error" in line:
        text += f" ({line.strip()})"
        break
  return text[:_ERROR_CHARS]
