"""A run's directory: checkpoints that carry the run's identity (so a resume is exact and never continues
another setting), and the metrics log (``metrics.jsonl``, TensorBoard scalars where a writer is installed).

``workdir/checkpoints/`` holds the whole state with its position (orbax, the newest ``keep``), each with a
JSON record of the epoch, the history so far and the identity (config, architecture, data fingerprint).
A resume restores the newest one, refuses one whose identity differs, and drops the log records written
after it, so the log matches the resumed state instead of holding two histories. In a multi-process job
every process runs the same loop; process 0 alone writes the log (checkpoints coordinate their own writes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from nasjax.parallel.distributed import is_main_process, to_host
from nasjax.utils import checkpoint as ckpt
from nasjax.utils.logging import MetricsLogger


@dataclasses.dataclass
class Position:
  """Where a run stands: ``epoch`` epochs done, then ``step`` steps of the next one, whose metric sums so
  far are ``sums`` (so the means of a resumed epoch are exact)."""
  epoch: int = 0
  step: int = 0
  sums: dict | None = None


def config_to_dict(cfg) -> dict:
  """A config (``ml_collections.ConfigDict`` or mapping) as plain JSON data, for identities and results."""
  return json.loads(cfg.to_json()) if hasattr(cfg, "to_json") else dict(cfg)


class Run:
  """Checkpoints and metrics log of one run in ``workdir``.

  Without ``steps_per_epoch`` checkpoints are taken at epoch ends and numbered by epoch; with it a loop may
  also checkpoint inside an epoch, and checkpoints are numbered by global step and record the step in the
  epoch and the epoch's running sums.
  """

  def __init__(self, workdir: str, identity: dict | None = None, keep: int = 2,
               steps_per_epoch: int | None = None):
    os.makedirs(workdir, exist_ok=True)
    self.workdir = workdir
    self.identity = identity or {}
    self.steps_per_epoch = steps_per_epoch
    self.manager = ckpt.Manager(os.path.join(os.path.abspath(workdir), "checkpoints"), keep)
    self.logger: MetricsLogger | None = None

  def check(self) -> None:
    """Refuses the newest checkpoint if it belongs to another run or is unreadable, reading only its record
    (cheap: call it before building or compiling anything); closes the manager when it refuses."""
    try:
      self.manager.latest_meta(self.identity)
    except BaseException:
      self.close()
      raise

  def resume(self, template: Any) -> tuple[Any, Position, list]:
    """``(state, position, history)`` of the newest checkpoint, or ``(template, start, [])`` without one.

    Raises :class:`~nasjax.errors.NasjaxError` for a checkpoint of another identity or a damaged one, after
    closing the checkpoint manager (no Orbax thread is left to print at shutdown). Opens the metrics log,
    dropping the records of epochs after the position. A resume says so in one line on stderr: what it
    found and where it goes on from.
    """
    try:
      restored = self.manager.restore_latest(template, self.identity)
    except BaseException:
      self.close()
      raise
    state, position, history = template, Position(), []
    if restored is not None:
      state, meta = restored
      position = Position(meta["epoch"], meta.get("step_in_epoch", 0), meta.get("sums"))
      history = meta["history"]
      if is_main_process():
        inside = f", {position.step} steps into epoch {position.epoch + 1}" if position.step else ""
        print(f"resuming: found the checkpoint of {position.epoch} finished epochs{inside} in "
              f"{self.manager.directory}; going on from epoch {position.epoch + 1}, step {position.step + 1}",
              file=sys.stderr, flush=True)
    self.logger = MetricsLogger(self.workdir, truncate_after_epoch=position.epoch) if is_main_process() else None
    return state, position, history

  def save(self, state: Any, position: Position, history: list) -> None:
    meta: dict[str, Any] = {"epoch": position.epoch, "history": history, "identity": self.identity}
    number = position.epoch
    if self.steps_per_epoch is not None:
      number = position.epoch * self.steps_per_epoch + position.step
      meta.update(step_in_epoch=position.step, sums=position.sums)
    self.manager.save(number, to_host(state), meta)

  def log(self, record: dict) -> None:
    if self.logger is not None:
      self.logger.write(record)

  def close(self) -> None:
    self.manager.close()
