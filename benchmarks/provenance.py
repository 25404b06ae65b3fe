"""How a result file was made: the commit, the command line and the machine, under the same names everywhere.

A benchmark that writes a result file puts ``provenance.of(__file__, argv)`` in it, so that the files
under ``results/`` compare field by field: ``commit`` (the short hash, marked when the measured code
differed from it), ``command`` (as typed at the repository root: the script's path relative, the
arguments as given) and ``machine`` (:func:`nasjax.utils.stages.environment`: device, versions, backend,
processor, cores and the load average when the run began). A script beside this one, imported as
``import provenance`` (the way ``enas_fashion_mnist.py`` imports ``darts_fashion_mnist``), not part of
the package.
"""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit(*paths: str) -> str:
  """HEAD's short hash, marked when any of ``paths`` (relative to the repository) has uncommitted changes.

  The mark says the figures came from code that no commit holds; "unknown" outside a git checkout.
  """
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                          cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], capture_output=True, text=True,
                           check=True, cwd=REPO).stdout.strip() if paths else ""
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + (" (with uncommitted changes)" if dirty else "")


def command(script: str, argv=None) -> str:
  """The command line as run from the repository root: ``python benchmarks/<script> <arguments>``.

  ``argv`` is what the benchmark's ``main`` parsed (``sys.argv[1:]`` when None), so a call from Python
  records the arguments it passed rather than the caller's.
  """
  args = sys.argv[1:] if argv is None else [str(a) for a in argv]
  return " ".join(["python", os.path.relpath(os.path.abspath(script), REPO)] + args)


def of(script: str, argv=None) -> dict:
  """``commit``, ``command`` and ``machine`` of a run of ``script`` (the benchmark's ``__file__``).

  The commit is marked as changed when the script or the package differs from it: both are the code
  measured.
  """
  from nasjax.utils.stages import environment  # imports jax: after argument parsing, so --help stays quick
  return {"commit": git_commit(os.path.relpath(os.path.abspath(script), REPO), "nasjax"),
          "command": command(script, argv), "machine": environment()}
