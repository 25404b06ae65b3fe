"""Finished stages of a multi-stage run (search, then retrain), kept as JSON and reused on a rerun.

A benchmark that searches and then retrains is resumed by running the same command again: a stage whose
stored settings equal the current ones is reused as it is, an interrupted one resumes from its own
checkpoints, and a result file cut short by a killed process is recomputed rather than trusted.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any, Callable

from nasjax.errors import NasjaxError


def write_json_atomic(path: str, value: Any, indent: int = 1, default: Callable | None = None) -> None:
  """Write-then-rename: a killed process leaves either the old file or the new one, never half of one."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=indent, default=default)
  os.replace(tmp, path)


def load_finished(path: str, settings: dict) -> dict | None:
  """The stage stored at ``path`` if it finished under exactly ``settings``, else None."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      stored = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  return stored if isinstance(stored, dict) and stored.get("settings") == settings else None


def environment() -> dict:
  """Where a figure was measured: the first device, the device count, the versions that matter and the host.

  The host's processor, cores and load average when the run began say how far its wall times can be
  trusted: the development machine is shared, and other work there slows a run without changing it.
  """
  import jax
  device = jax.devices()[0]
  load = os.getloadavg() if hasattr(os, "getloadavg") else None
  return {"device": f"{device.platform}: {device.device_kind} x{jax.device_count()}",
          "versions": {"python": platform.python_version(), "jax": jax.__version__},
          "backend": jax.default_backend(), "platform": platform.platform(),
          "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
          "load_average": [round(v, 2) for v in load] if load else None}


def report_main(parse_args: Callable[[Any], Any], run: Callable[[Any], dict], argv=None) -> int:
  """Parses, runs, prints the report as JSON (and writes it to ``args.json``); bad input exits 2."""
  try:
    args = parse_args(argv)
    report = run(args)
  except NasjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  text = json.dumps(report, indent=1)
  print(text)
  if getattr(args, "json", None):
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      f.write(text + "\n")
  return 0


def check_counts(args: Any, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
  """One clear error for the first integer option of ``args`` out of its range: those in ``positive``
  must be >= 1, those in ``non_negative`` >= 0 (named by attribute; the message names the flag)."""
  for names, low, rule in ((positive, 1, "must be a positive integer"), (non_negative, 0, "must be >= 0")):
    for name in names:
      if getattr(args, name) < low:
        raise NasjaxError(f"--{name.replace('_', '-')} {rule}; got {getattr(args, name)}")
