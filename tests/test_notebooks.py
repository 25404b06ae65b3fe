"""The notebooks under notebooks/ run top to bottom in their small mode (``NASJAX_NOTEBOOK_MODE=small``),
each within its time budget, and draw their figures; a cell that raises fails the test.

They run in a fresh Jupyter kernel (nbclient) with the working directory notebooks/, as a reader's would,
and find the shared data where the tests do (``--shared-data``, ``$NASJAX_SHARED_DATA``, ``../shared/data``).
A notebook that needs the NAS-Bench-201 table is skipped when the table is absent.

All seven run in the default test run. Each small mode costs about 20 to 90 CPU seconds, almost all of
it XLA compilation, so the small modes keep their programs few and small, and most kernels compile with
XLA's older CPU loop emitters (:func:`cpu_emitter_flags`). A notebook's entry in NOTEBOOKS can move it to the
slow run. They spread over the xdist workers (no group) and start first (conftest's LONG_TESTS), except
quickstart and darts, which run one after the other on one worker: they search with the same settings, and
the kernels share the session-temporary compilation cache of conftest.py, so the second compiles nothing
for that search. The cache starts empty every session, as CI does; a cache folder the user set is not
passed on (a reader's kernel would not have one).
"""

from __future__ import annotations

import functools
import os
import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

import conftest  # noqa: E402

NOTEBOOKS_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"

# name: (needs the NB201 table, time limit per cell in seconds, wall budget of the whole notebook in seconds,
# default run or slow, compiled with the older CPU loop emitters). The budgets are real limits but loose,
# several times the small mode's cost, since the other xdist worker, the kernel's own threads and whatever
# else runs share the cores. Kernel CPU seconds on this 2-core machine at load 1-2, kernel start included,
# with XLA's default emitters / the older ones: performance_estimation 87.7 / 73.3, quickstart 33.1 / 24.0,
# darts 49.9 / 37.9, enas_nasrl 44.6 / 30.4, nb201_search 17.6 / 16.4, multi_objective 35.0 / 40.1,
# zero_cost_proxies 26.1 / 42.5: the older emitters pay off where the small mode turns XLA's optimisation
# passes off (or runs little) and cost more where it keeps them, so each notebook takes the cheaper.
# Longest first, as the run starts them (balances the workers); quickstart before darts, which reuses its programs.
NOTEBOOKS = {
    "performance_estimation": (False, 300, 420, "default", True),
    "quickstart": (False, 300, 240, "default", True),
    "darts": (False, 300, 360, "default", True),
    "enas_nasrl": (True, 300, 300, "default", True),
    "multi_objective": (True, 300, 300, "default", False),
    "zero_cost_proxies": (True, 300, 240, "default", False),
    "nb201_search": (True, 300, 180, "default", True),
}
# Searched with the same settings: one worker, so the second finds the first's programs in the cache.
SHARED_SEARCH = ("quickstart", "darts")


@functools.lru_cache(maxsize=None)
def cpu_emitter_flags() -> str:
  """``XLA_FLAGS`` for a kernel whose NOTEBOOKS entry asks for it: XLA's CPU backend writes its fused loops
  with its older LLVM IR emitters instead of the MLIR fusion emitters (``xla_cpu_use_fusion_emitters=false``).
  A small mode is almost all compilation of small programs run briefly, and without XLA's optimisation
  passes the older emitters compile them faster (figures at NOTEBOOKS); both emit the same operations, so
  values agree to rounding, and a reader's kernel keeps XLA's default. An unknown flag in ``XLA_FLAGS``
  aborts a process, so the flag is passed only when this jaxlib takes it as a compile option."""
  import jax
  import jax.numpy as jnp
  try:
    jax.jit(jnp.negative, compiler_options={"xla_cpu_use_fusion_emitters": False}).lower(
        jax.device_put(jnp.zeros(()), jax.devices("cpu")[0])).compile()
  except Exception:  # noqa: BLE001 - any refusal: this jaxlib has no such option
    return ""
  return "--xla_cpu_use_fusion_emitters=false"


def run_notebook(name: str, shared: pathlib.Path, monkeypatch) -> nbformat.NotebookNode:
  notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
  # The kernel inherits this process's environment: small mode, the tests' data folder, and the session's
  # temporary compilation cache if conftest made one.
  monkeypatch.setenv("NASJAX_NOTEBOOK_MODE", "small")
  monkeypatch.setenv("NASJAX_SHARED_DATA", str(shared))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  # None of the test session's fake devices; the CPU backend's older fused-loop emitters where the notebook's
  # entry asks for them and this jaxlib has them (see cpu_emitter_flags).
  flags = cpu_emitter_flags() if NOTEBOOKS[name][4] else ""
  if flags:
    monkeypatch.setenv("XLA_FLAGS", flags)
  else:
    monkeypatch.delenv("XLA_FLAGS", raising=False)
  import jax
  folder = jax.config.jax_compilation_cache_dir
  if folder is not None and folder in (conftest._XLA_CACHE_DIR, os.environ.get(conftest._XLA_CACHE_ENV)):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", folder)
    # conftest's size limit turns JAX's file lock on where the xdist workers share the folder: the kernels
    # need it too
    monkeypatch.setenv("JAX_COMPILATION_CACHE_MAX_SIZE", str(jax.config.jax_compilation_cache_max_size))
  else:
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  client = nbclient.NotebookClient(notebook, timeout=NOTEBOOKS[name][1], kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
  client.execute()  # raises CellExecutionError, naming the cell, if any cell raises
  return notebook


def figures(notebook) -> int:
  return sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
             for output in cell.outputs)


def _marks(name: str) -> list:
  marks = [pytest.mark.slow] if NOTEBOOKS[name][3] == "slow" else []
  if name in SHARED_SEARCH:
    marks.append(pytest.mark.xdist_group("notebooks_shared_search"))
  return marks


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in NOTEBOOKS])
def test_notebook_runs_in_small_mode(name, shared_data, request, monkeypatch):
  if NOTEBOOKS[name][0]:
    request.getfixturevalue("nb201_table")  # skips the test when the table is absent
  start = time.perf_counter()
  notebook = run_notebook(name, shared_data, monkeypatch)
  wall = time.perf_counter() - start
  assert figures(notebook) >= 1, f"{name}.ipynb drew no figure"
  assert wall < NOTEBOOKS[name][2], (f"{name}.ipynb took {wall:.0f} s in small mode, over its budget of "
                                     f"{NOTEBOOKS[name][2]} s: shrink the small mode, or raise the budget "
                                     "only with the README's test-time limit in mind")


def test_every_notebook_is_tested_and_committed_with_its_outputs():
  on_disk = {p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")}
  assert on_disk == set(NOTEBOOKS), "add each notebook to NOTEBOOKS (and each entry's notebook to notebooks/)"
  for name in NOTEBOOKS:
    notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), f"{name}.ipynb is not saved after a full run"
    assert 'os.environ.get("NASJAX_NOTEBOOK_MODE", "small")' in code[0].source, f"{name}.ipynb: no mode cell"
    outputs = "".join(str(o) for c in code for o in c.outputs)
    assert str(NOTEBOOKS_DIR.parent) not in outputs, f"{name}.ipynb's saved outputs name this machine's paths"
