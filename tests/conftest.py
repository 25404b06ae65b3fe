"""Shared test set-up: fake CPU devices, the shared-data location, and fixtures several files use.

Data outside the repository (the NAS-Bench-201 table, the full Fashion-MNIST file) is looked for in the
folder given by ``--shared-data DIR``, else ``$NASJAX_SHARED_DATA``, else ``../shared/data`` beside the
repository; a test that needs a file that is not there is skipped.
"""

import contextlib
import os
import pathlib
import shutil
import tempfile

# Data-parallel code is tested on fake CPU devices; this must happen before JAX initialises.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "NASJAX_SHARED_DATA"


def pytest_addoption(parser):
  parser.addoption("--shared-data", default=None, metavar="DIR",
                   help=f"folder of the shared data (nb201/nb201.csv, ...); default ${SHARED_DATA_ENV}, "
                        "else ../shared/data beside the repository")


def shared_data_dir(config=None) -> pathlib.Path:
  """The shared-data folder: ``--shared-data``, ``$NASJAX_SHARED_DATA``, else ``<repo>/../shared/data``."""
  given = config.getoption("--shared-data") if config is not None else None
  given = given or os.environ.get(SHARED_DATA_ENV)
  return pathlib.Path(given) if given else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data(pytestconfig) -> pathlib.Path:
  return shared_data_dir(pytestconfig)


@pytest.fixture(scope="session")
def nb201_table(pytestconfig, shared_data) -> str:
  """Path of the NAS-Bench-201 table: ``nb201/nb201.csv`` of ``--shared-data``, else ``$NASJAX_NB201_TABLE``
  (what ``--estimator tabular`` reads), else of the shared-data folder; the test is skipped when the file
  is absent."""
  explicit = pytestconfig.getoption("--shared-data")
  path = (None if explicit else os.environ.get("NASJAX_NB201_TABLE")) or str(shared_data / "nb201" / "nb201.csv")
  if not os.path.isfile(path):
    pytest.skip(f"no NAS-Bench-201 table at {path} (pass --shared-data DIR or set ${SHARED_DATA_ENV})")
  return path


_XLA_CACHE_DIR = None
# The session's cache folder, handed from xdist's controller to its workers (they start after its
# pytest_configure and inherit its environment).
_XLA_CACHE_ENV = "NASJAX_TESTS_XLA_CACHE"


def pytest_configure(config):
  """Compiled programs are cached in a temporary folder of this session, never in ~/.cache where
  ``nasjax`` keeps them: every run starts cold, as CI does, and a program that several tests compile is
  compiled once. The xdist workers share the folder: a module's tests are spread over both workers, so a
  module fixture's programs (and those several modules compile) were otherwise compiled once per worker.
  Sharing needs JAX's file lock around each read and write (on when the cache has a size limit), else a
  worker could read an entry the other is still writing; without ``filelock`` each worker keeps its own
  folder. Set here, before any test module compiles anything: JAX decides whether to use the cache at its
  first compilation. ``$JAX_COMPILATION_CACHE_DIR`` set by the user is kept."""
  global _XLA_CACHE_DIR
  import jax
  if jax.config.jax_compilation_cache_dir is not None:
    return
  try:
    import filelock  # noqa: F401
    shared = True
  except ImportError:
    shared = False
  folder = os.environ.get(_XLA_CACHE_ENV) if shared and hasattr(config, "workerinput") else None
  if folder is None:
    folder = _XLA_CACHE_DIR = tempfile.mkdtemp(prefix="nasjax-tests-xla-")
    if shared:
      os.environ[_XLA_CACHE_ENV] = folder
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  if shared:
    jax.config.update("jax_compilation_cache_max_size", 2**34)  # a limit turns the lock on; never reached


def pytest_unconfigure(config):
  if _XLA_CACHE_DIR is not None:
    shutil.rmtree(_XLA_CACHE_DIR, ignore_errors=True)


@contextlib.contextmanager
def xla_optimisations_off(cpu_fusion_emitters: bool = True):
  """XLA without most optimisation passes, for tests that check values, not speed: those passes take most
  of the compile time of the tests' small programs on a CPU. Restored afterwards.

  ``cpu_fusion_emitters=False`` also has XLA's CPU backend generate its fused loops with its older LLVM IR
  emitters instead of the MLIR fusion emitters (``xla_cpu_use_fusion_emitters``), which roughly halves the
  rest of the compile time (a DARTS supernet's gradient, 3 cells: 7.6 -> 3.5 CPU s; jaxlib 0.10.2). Both
  emit the same operations, so values agree to rounding; what the fused loops are written in is XLA's
  business, not nasjax's. The option is added to each CPU compilation's options (as
  ``jax.jit(..., compiler_options=...)`` would, and so it is part of the compile-cache key): JAX reads
  ``XLA_FLAGS`` once per process, which a fixture cannot change."""
  import jax
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  emitters = contextlib.nullcontext() if cpu_fusion_emitters else _cpu_fusion_emitters_off()
  try:
    with emitters:
      yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)


@contextlib.contextmanager
def _cpu_fusion_emitters_off():
  """Every CPU compilation in the block gets ``xla_cpu_use_fusion_emitters=False`` unless its own
  options say otherwise (JAX builds each compilation's options in ``compiler.get_compile_options``)."""
  import inspect

  from jax._src import compiler
  original = getattr(compiler, "get_compile_options", None)
  if original is None or "env_options_overrides" not in inspect.signature(original).parameters:
    yield  # a JAX that builds its options elsewhere: XLA's default emitters, the same values
    return

  def get_compile_options(*args, env_options_overrides=None, **kwargs):
    backend = kwargs.get("backend")
    if backend is None or getattr(backend, "platform", None) == "cpu":
      env_options_overrides = {"xla_cpu_use_fusion_emitters": False, **(env_options_overrides or {})}
    return original(*args, env_options_overrides=env_options_overrides, **kwargs)

  compiler.get_compile_options = get_compile_options
  try:
    yield
  finally:
    compiler.get_compile_options = original


@pytest.fixture(scope="module")
def fast_compiles():
  """:func:`xla_optimisations_off` for a whole module: ``pytestmark = pytest.mark.usefixtures("fast_compiles")``
  (module fixtures set up after it compile fast too)."""
  with xla_optimisations_off():
    yield


@pytest.fixture
def fast_compiles_for_test():
  """:func:`xla_optimisations_off` for one test, in a module whose other tests keep XLA's optimisations."""
  with xla_optimisations_off():
    yield


@pytest.fixture(scope="module")
def fastest_compiles():
  """:func:`fast_compiles` with the CPU backend's older fused-loop emitters too
  (``xla_optimisations_off(cpu_fusion_emitters=False)``), for a module whose checks have been run that
  way: ``pytestmark = pytest.mark.usefixtures("fastest_compiles")``."""
  with xla_optimisations_off(cpu_fusion_emitters=False):
    yield


@pytest.fixture
def fastest_compiles_for_test():
  """:func:`fastest_compiles` for one test."""
  with xla_optimisations_off(cpu_fusion_emitters=False):
    yield


@pytest.fixture(scope="session")
def embedded_dataset():
  """The Fashion-MNIST subset shipped in the package (loaded once per worker; treat as read-only)."""
  from nasjax import data
  return data.load_dataset("embedded")


@pytest.fixture(scope="session")
def tiny_dataset():
  """96 8x8 grey images in 4 classes told apart by brightness (the first 16 again as the test split):
  there is something to learn, and every compile and epoch stays short. Treat as read-only."""
  import numpy as np
  from nasjax import data
  rng = np.random.default_rng(0)
  y = np.arange(96) % 4
  x = (rng.random((96, 8, 8, 1)) * 0.5 + y[:, None, None, None] / 8).astype(np.float32)
  return data.Dataset("tiny", x, y.astype(np.int64), x[:16], y[:16].astype(np.int64), 4, (0.4,), (0.2,))


@pytest.fixture(scope="session")
def write_tiny_npz():
  """``write(path, num_train, num_test) -> str``: an .npz of 8x8 uint8 grey images in 4 classes told apart
  by brightness, the file form of ``tiny_dataset`` for the command line's ``--data``."""
  import numpy as np

  def write(path, num_train: int, num_test: int) -> str:
    rng = np.random.default_rng(0)
    n = num_train + num_test
    y = np.arange(n) % 4
    x = np.clip(rng.random((n, 8, 8, 1)) * 96 + y[:, None, None, None] * 48, 0, 255).astype(np.uint8)
    np.savez(path, x_train=x[:num_train], y_train=y[:num_train], x_test=x[num_train:], y_test=y[num_train:])
    return str(path)

  return write


# The longest tests of the default run, longest first (CPU seconds of each test's own process, measured
# per test on a loaded 2-core machine, 2026-12-05): they start first, since xdist's loadgroup hands tests
# out in collection order and one collected last would run alone at the end while the other worker idles.
# Names no longer found are ignored; add a test here when it takes > ~10 s.
LONG_TESTS = (
    "test_notebooks.py::test_notebook_runs_in_small_mode",  # ~15-75 CPU s each, all seven
    "test_distributed.py::test_two_process_job_survives_a_first_collective_skew_over_30_s",  # 40 s asleep
    "test_nn.py::test_scanned_edges_equal_unrolled_edges_with_their_gradients",  # ~37
    "test_nn.py::test_scanned_cell_pairs_equal_separate_cells_with_their_gradients",  # ~26
    "test_nb201_oneshot.py::test_cli_darts_on_nb201_moves_alphas_and_writes_the_results",  # ~24
    "test_cell_network.py::test_one_compiled_program_for_every_architecture",  # ~23 (the module's step)
    "test_crash_safety.py::test_retraining_resumes_exactly_from_a_checkpoint_inside_an_epoch",  # ~22
    "test_export.py::test_transfer_trains_the_stacked_imagenet_network_and_info_counts_it",  # ~20 (trains)
    "test_short_training.py::test_supernet_model_trains_every_candidate_with_one_compiled_program",  # ~20
    "test_estimator_registry.py::test_train_on_nb201_compiles_one_program_for_all_candidates",  # ~20
    "test_train_cli.py::test_resume_after_kill_is_exact",  # ~18
    "test_cli_search.py::test_hyperband_with_the_train_estimator_on_a_macro_space",  # ~18
    "test_train_cli.py::test_search_demo_end_to_end",  # ~17
    "test_strategies.py::test_beats_random_search_on_known_optimum",  # ~17 for bayesopt
    "test_evolution_benchmark.py::test_smoke_low_and_morphism_spend_exactly_the_budget",  # ~17
    "test_cost_ws.py::test_recalibrated_stats_are_the_mean_of_per_batch_stats",  # ~16
    "test_train_cli.py::test_train_eval_and_info",  # ~15
    "test_cell_network.py::test_computes_the_genotype_network_for_a_fixed_architecture",  # ~13-15 each
    "test_train_cli.py::test_data_parallel_step_equals_single_device",  # ~12
    "test_export.py::test_onnx_round_trip",  # ~10: jax2onnx's first conversion
    "test_bad_input.py::test_refused_restore_exits_cleanly",  # ~10 (a subprocess)
    "test_oneshot.py::test_spos_searches_its_trained_supernet_with_the_configured_strategy",  # ~10
    "test_supernet_step_benchmark.py::test_weights_step_json_and_warm_compilation_cache",  # ~8 (2 subprocesses)
    "test_search_driver.py::test_killed_regularized_evolution_resumes_to_the_uninterrupted_run",  # ~2 CPU, ~14 wall
)


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(LONG_TESTS)}
  items.sort(key=lambda item: rank.get(f"{item.path.name}::{getattr(item, 'originalname', None) or item.name}",
                                       len(rank)))  # a stable sort: the other tests keep their order
