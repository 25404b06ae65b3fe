"""Checks of what a user passes, made before any work or allocation: each raises one :class:`NasjaxError`
naming the option or file, what was wrong and what is accepted.

Commands call these first (the CLI's ``search``, ``train``, ``eval``, ``info``; a new command should too):

* :func:`check_out_dir`: an output folder that can be created and written, tested by creating a file (a
  process running as root with reduced privileges obeys mode bits that ``os.access`` says it ignores);
* :func:`check_settings`: the numeric settings of a config that no run can use (non-positive epochs,
  counts and sizes, probabilities outside [0, 1), ...), by key, for whatever keys a config has;
* :func:`check_fits` with :func:`cell_network_bytes`: an estimate of the memory a network needs, refused
  when even that lower estimate exceeds the memory available, instead of hanging or running out mid-way.
"""

from __future__ import annotations

import math
import os
import tempfile

from nasjax.errors import NasjaxError

GiB = 1024 ** 3


def option(key: str) -> str:
  return "--" + key.replace("_", "-")


# --------------------------------------------------------------------------------------------------
# output folders


def check_out_dir(out, name: str = "--out") -> str:
  """Checks that ``out`` is, or can be created as, a folder this process can write in; writes nothing
  that stays (the probe file is removed) and creates no folder.

  Raises:
    NasjaxError: ``out`` is empty, is a file, lies under a file, or its nearest existing folder cannot be
      written in.
  """
  if not isinstance(out, str) or not out.strip():
    raise NasjaxError(f"{name} is empty; give a folder for the results (e.g. {name} runs/mine)")
  path = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(path) and not os.path.isdir(path):
    raise NasjaxError(f"{name} {out} is a file, not a directory; give a folder for the results")
  existing = path
  while not os.path.isdir(existing):
    parent = os.path.dirname(existing)
    if os.path.exists(existing):  # a file where a folder of the path must be
      raise NasjaxError(f"{name} {out} lies under {existing}, which is a file, not a directory")
    if parent == existing:
      break
    existing = parent
  try:
    # Creating a file is the only reliable test: os.access answers for the real user id, and root with
    # dropped capabilities (or a read-only mount) is refused despite what mode bits say.
    fd, probe = tempfile.mkstemp(prefix=".nasjax-write-test-", dir=existing)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    where = "" if existing == path else f" (its nearest existing folder {existing})"
    raise NasjaxError(f"{name} {out} is not writable{where}: {e.strerror or e}; choose a folder you can "
                      "write in") from None
  return path


# --------------------------------------------------------------------------------------------------
# settings


def positive_int(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise NasjaxError(f"{name} must be a positive integer, got {value!r}")
  return value


def non_negative_int(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise NasjaxError(f"{name} must be an integer >= 0, got {value!r}")
  return value


def _number(value, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise NasjaxError(f"{name} must be a finite number, got {value!r}")
  return float(value)


def non_negative(value, name: str) -> float:
  if _number(value, name) < 0:
    raise NasjaxError(f"{name} must be >= 0, got {value!r}")
  return float(value)


def positive(value, name: str) -> float:
  if _number(value, name) <= 0:
    raise NasjaxError(f"{name} must be > 0, got {value!r}")
  return float(value)


def probability(value, name: str) -> float:
  """A probability of dropping or skipping something: in [0, 1) (1 would drop everything)."""
  if not 0.0 <= _number(value, name) < 1.0:
    raise NasjaxError(f"{name} must be a probability in [0, 1), got {value!r}")
  return float(value)


def open_fraction(value, name: str) -> float:
  if not 0.0 < _number(value, name) < 1.0:
    raise NasjaxError(f"{name} must lie in (0, 1), strictly between 0 and 1, got {value!r}")
  return float(value)


def num_classes(value, name: str = "--classes") -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 2:
    raise NasjaxError(f"{name} must be at least 2 (a classifier needs two classes), got {value!r}")
  return value


# What each settings key of nasjax's configs must hold; a config is checked on the keys it has.
SETTING_RULES = {
    "epochs": positive_int, "batch_size": positive_int, "eval_batch_size": positive_int,
    "channels": positive_int, "layers": positive_int, "cells_per_stage": positive_int,
    "checkpoint_every": positive_int, "keep_checkpoints": positive_int, "checkpoint_every_steps": non_negative_int,
    "train_subset": non_negative_int, "cutout": non_negative_int, "crop_padding": non_negative_int,
    "stem_multiplier": positive_int, "rank_samples": positive_int, "rank_batches": positive_int,
    "eigen_every": non_negative_int, "eigen_iters": positive_int, "arch_warmup_epochs": non_negative_int,
    "drop_path": probability, "valid_fraction": open_fraction, "momentum": probability,
    "learning_rate": positive, "min_learning_rate": non_negative, "arch_learning_rate": non_negative,
    "weight_decay": non_negative, "arch_weight_decay": non_negative, "grad_clip": non_negative,
    "auxiliary_weight": non_negative, "cost_weight": non_negative, "tau_max": positive, "tau_min": positive,
}


def check_settings(cfg, rules: dict | None = None) -> None:
  """Checks every key of ``cfg`` that ``rules`` (default :data:`SETTING_RULES`) names; the message names the
  option that sets it (``--batch-size``)."""
  rules = SETTING_RULES if rules is None else rules
  for key, rule in rules.items():
    if key in cfg:
      rule(cfg[key], option(key))


# --------------------------------------------------------------------------------------------------
# sizes


def available_memory_bytes() -> int | None:
  """Memory this process may still use: the smaller of the machine's available memory and its cgroup's
  limit left, or None where neither can be read (then nothing is refused)."""
  found = []
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          found.append(int(line.split()[1]) * 1024)
  except (OSError, ValueError, IndexError):
    pass
  try:
    with open("/sys/fs/cgroup/memory.max") as f:
      limit = f.read().strip()
    if limit != "max":
      with open("/sys/fs/cgroup/memory.current") as f:
        found.append(int(limit) - int(f.read().strip()))
  except (OSError, ValueError):
    pass
  if not found:
    try:
      found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
      return None
  return max(0, min(found))


def check_fits(needed_bytes: float, what: str, hint: str = "", available: int | None = None) -> None:
  """Refuses ``what`` when its estimated memory exceeds what is available (``available``, default
  :func:`available_memory_bytes`), with both figures."""
  available = available_memory_bytes() if available is None else available
  if available is not None and needed_bytes > available:
    raise NasjaxError(f"{what} needs about {needed_bytes / GiB:,.1f} GiB of memory by a lower estimate, more "
                      f"than the {available / GiB:,.1f} GiB available here" + (f"; {hint}" if hint else ""))


def cell_network_bytes(channels: int, layers: int, input_shape, batch: int, classes: int, *,
                       train: bool = True, steps: int = 4, edges: int = 8) -> float:
  """A lower estimate of the memory a DARTS-style cell network needs, in bytes (float32).

  Cells run at the stem's resolution with ``channels`` channels, halving the resolution and doubling the
  channels at the reduction cells (a third and two thirds of the way, as in DARTS, Liu et al. 2019).
  Counted: each cell's output (``steps`` x channels) and one tensor per edge, the parameters (one
  channels-to-channels 1x1 convolution per edge, the classifier) and, when training, the activations of
  the whole batch kept for the backward pass, gradients and a momentum buffer. The real figure is larger
  (separable convolutions keep several tensors per edge), so whatever this refuses cannot run.
  """
  h, w = int(input_shape[0]), int(input_shape[1])
  activations = float(h * w * int(input_shape[2]) + 3 * channels * h * w)  # input and stem
  params = 0.0
  # Closed form over the three stages (a loop over a billion cells would itself hang).
  bounds = [0, layers // 3, 2 * layers // 3, layers] if layers >= 3 else [0, layers, layers, layers]
  for stage in range(3):
    cells = bounds[stage + 1] - bounds[stage]
    c, area = channels * 2 ** stage, max(1, h >> stage) * max(1, w >> stage)
    activations += cells * (steps + edges) * c * area
    params += cells * edges * c * c
  params += steps * channels * 4 * classes
  per_example = activations if train else activations / max(1, layers)  # inference keeps one cell's worth
  copies = 3 if train else 1  # parameters, gradients, momentum
  return 4.0 * (batch * per_example + copies * params)

