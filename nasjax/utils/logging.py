"""Metrics logs: JSONL always, TensorBoard where a writer is installed; progress bars."""

from __future__ import annotations

import json
import os
import sys

from tqdm.auto import tqdm


def progress(total: int, desc: str, enabled: bool = True):
  return tqdm(total=total, desc=desc, leave=False, disable=not enabled, file=sys.stderr,
              dynamic_ncols=True, mininterval=1.0)


def _tensorboard_writer(logdir: str):
  try:
    from tensorboardX import SummaryWriter  # optional
  except ImportError:
    try:
      from torch.utils.tensorboard import SummaryWriter  # optional
    except ImportError:
      return None
  return SummaryWriter(logdir)


class MetricsLogger:
  """Appends one JSON object per record to ``workdir/metrics.jsonl``.

  On a resume from epoch E, records of later epochs (written after the checkpoint the run resumes from)
  are dropped, so the log matches the resumed state instead of holding two histories.
  """

  def __init__(self, workdir: str, truncate_after_epoch: int | None = None, filename="metrics.jsonl"):
    self.path = os.path.join(workdir, filename)
    if truncate_after_epoch is not None and os.path.exists(self.path):
      kept = []
      with open(self.path) as f:
        for line in f:
          try:
            rec = json.loads(line)
          except json.JSONDecodeError:
            continue  # a line cut by a killed process
          if rec.get("epoch", 0) <= truncate_after_epoch:
            kept.append(line if line.endswith("\n") else line + "\n")
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(kept)
      os.replace(tmp, self.path)
    self._tb = _tensorboard_writer(os.path.join(workdir, "tensorboard"))

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record, default=float) + "\n")
    if self._tb is not None:
      step = int(record.get("epoch", record.get("step", 0)))
      for k, v in record.items():
        if isinstance(v, (int, float)) and k not in ("epoch", "step"):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()
