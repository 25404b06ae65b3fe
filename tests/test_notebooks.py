"""The notebooks under notebooks/ run top to bottom in their small mode (``NASJAX_NOTEBOOK_MODE=small``),
each within its time limit, and draw their figures; a cell that raises fails the test.

They run in a fresh Jupyter kernel (nbclient) with the working directory notebooks/, as a reader's would,
and find the shared data where the tests do (``--shared-data``, ``$NASJAX_SHARED_DATA``, ``../shared/data``).
A notebook that needs the NAS-Bench-201 table is skipped when the table is absent. Each small mode costs one
to several CPU minutes, so all are slow-marked (the default run keeps the check that every notebook is listed
and committed with its outputs).
"""

from __future__ import annotations

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"

# name: (needs the NB201 table, time limit per cell in seconds, default run or slow)
NOTEBOOKS = {
    "quickstart": (False, 600, "slow"),
    "nb201_search": (True, 300, "slow"),
    "zero_cost_proxies": (True, 300, "slow"),
    "darts": (False, 1200, "slow"),
    "performance_estimation": (False, 1200, "slow"),
    "enas_nasrl": (True, 1200, "slow"),
    "multi_objective": (True, 1200, "slow"),
}


def run_notebook(name: str, shared: pathlib.Path, monkeypatch) -> nbformat.NotebookNode:
  notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
  # The kernel inherits this process's environment: small mode, the tests' data folder, and none of the
  # test session's fake devices or compilation cache (a reader's kernel has neither).
  monkeypatch.setenv("NASJAX_NOTEBOOK_MODE", "small")
  monkeypatch.setenv("NASJAX_SHARED_DATA", str(shared))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  client = nbclient.NotebookClient(notebook, timeout=NOTEBOOKS[name][1], kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
  client.execute()  # raises CellExecutionError, naming the cell, if any cell raises
  return notebook


def figures(notebook) -> int:
  return sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
             for output in cell.outputs)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if NOTEBOOKS[n][2] == "slow" else n
                                  for n in NOTEBOOKS])
def test_notebook_runs_in_small_mode(name, shared_data, request, monkeypatch):
  if NOTEBOOKS[name][0]:
    request.getfixturevalue("nb201_table")  # skips the test when the table is absent
  notebook = run_notebook(name, shared_data, monkeypatch)
  assert figures(notebook) >= 1, f"{name}.ipynb drew no figure"


def test_every_notebook_is_tested_and_committed_with_its_outputs():
  on_disk = {p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")}
  assert on_disk == set(NOTEBOOKS), "add each notebook to NOTEBOOKS (and each entry's notebook to notebooks/)"
  for name in NOTEBOOKS:
    notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), f"{name}.ipynb is not saved after a full run"
    assert 'os.environ.get("NASJAX_NOTEBOOK_MODE", "small")' in code[0].source, f"{name}.ipynb: no mode cell"
