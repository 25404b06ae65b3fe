"""The one epoch loop: steps over batches, the NaN/Inf guard, progress, the epoch record, the metrics log,
checkpoints and exact resume.

Every training of nasjax runs here: retraining a genotype and the training-based estimators
(:func:`nasjax.training.supervised.run_epochs`) and the one-shot search's bilevel step
(:func:`nasjax.oneshot.search.run_search`). The loop knows nothing of models: it is given

* ``step_fn(state, batch, epoch) -> (state, metrics)``, a (jitted) step on a batch already sharded over the
  mesh, whose metrics are scalars;
* ``batches(epoch, start_step)``, the host batches of an epoch from a step on (a deterministic function of
  the epoch, so a resume mid-epoch sees the batches an uninterrupted run would);
* ``end_epoch(state, info, history) -> record``, the epoch's record (means, evaluation, ...); a record with
  a ``"stopped"`` reason ends the loop after it is logged and checkpointed (and a resume from that
  checkpoint runs nothing more).

A metric that becomes NaN or Inf raises :class:`~nasjax.errors.DivergenceError` before anything of that
epoch is logged or checkpointed, so the last good checkpoint stays the newest.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterable, Sequence

from nasjax import data as nasdata
from nasjax.errors import DivergenceError, NasjaxError
from nasjax.parallel.distributed import is_main_process, to_host
from nasjax.training.run import Position, Run
from nasjax.utils.logging import progress


@dataclasses.dataclass
class EpochEnd:
  """What ``end_epoch`` is told about the epoch just trained."""
  epoch: int                 # its index, from 0
  sums: dict                 # sums of every step metric over the epoch (all its steps, resumed ones too)
  steps: int                 # steps per epoch
  start_step: int            # the step this call started the epoch at (0 unless resumed mid-epoch)
  seconds: float             # wall time of this call's part of the epoch
  steady_s_per_step: float | None  # mean step time after this call's first step (which holds compiles)


@dataclasses.dataclass
class LoopResult:
  state: Any
  history: list
  position: Position         # where the loop stopped
  finished: bool             # all epochs run, or stopped by a record
  stopped: str | None = None  # the stopping record's reason

  def interrupted(self) -> dict:
    """What a search returns from a call that ended before the last epoch (``stop_after_*``, as a killed
    process would): where it stopped, the state and the history so far."""
    return {"finished": False, "epoch": self.position.epoch, "step_in_epoch": self.position.step,
            "state": self.state, "history": self.history}


def check_batch_size(batch_size: int, mesh) -> None:
  if batch_size % mesh.size:
    raise NasjaxError(f"batch size {batch_size} must be divisible by the {mesh.size} devices")


def divergence(metric: str, value: float, epoch: int, step: int) -> str:
  """The default message of a :class:`DivergenceError` (epoch and step counted from 1)."""
  return f"{metric.replace('_', ' ')} became {value} at epoch {epoch}, step {step}"


def run_loop(step_fn: Callable, state, batches: Callable[[int, int], Iterable[tuple]], *, epochs: int,
             steps_per_epoch: int, end_epoch: Callable[[Any, EpochEnd, list], dict], mesh,
             start: Position | None = None, history: Sequence[dict] = (), run: Run | None = None,
             initial_sums: dict | None = None, guard: Sequence[str] | None = None,
             divergence_message: Callable[[str, float, int, int], str] = divergence,
             checkpoint_every: int = 1, checkpoint_every_steps: int = 0, stop_after_epochs: int | None = None,
             stop_after_steps: int | None = None, desc: str = "epoch", show_progress: bool = True,
             images_per_step: int | None = None) -> LoopResult:
  """Runs epochs ``start.epoch`` .. ``epochs - 1`` (from step ``start.step``) and returns where it ended.

  Args:
    guard: the metrics checked for NaN/Inf after every step (None: all of them), in the step's order.
    divergence_message: ``(metric, value, epoch, step) -> str`` for the :class:`DivergenceError`.
    run: where records are logged and checkpoints saved: after every ``checkpoint_every``-th epoch, the
      last and a stopping one, and inside an epoch every ``checkpoint_every_steps`` steps.
    initial_sums: the sums an epoch starts from (names a record expects even when no step reports them).
    stop_after_epochs, stop_after_steps: end this call after that many epochs or steps, as a killed
      process would (nothing is saved at that point); the result has ``finished=False``.
  """
  start = start or Position()
  history = list(history)
  epoch, start_step, resumed_sums = start.epoch, start.step, start.sums
  end = epochs if stop_after_epochs is None else min(epochs, epoch + stop_after_epochs)
  # A run resumed after its stopping record stays stopped, as the uninterrupted run did.
  stopped, steps_run = (history[-1].get("stopped") if history else None), 0
  while epoch < end and stopped is None:
    sums = dict(resumed_sums or initial_sums or {})
    resumed_sums = None
    t0 = time.perf_counter()
    bar = progress(steps_per_epoch, f"{desc} {epoch + 1}/{epochs}", show_progress and is_main_process())
    bar.update(start_step)
    first_step_done = None
    for step, batch in enumerate(batches(epoch, start_step), start=start_step):
      state, metrics = step_fn(state, nasdata.shard_batch(batch, mesh), epoch)
      metrics = {k: float(v) for k, v in to_host(metrics).items()}
      if first_step_done is None:
        first_step_done = time.perf_counter()
      for name, value in metrics.items():
        if (guard is None or name in guard) and not math.isfinite(value):
          raise DivergenceError(divergence_message(name, value, epoch + 1, step + 1), name, value, epoch + 1,
                                step + 1)
        sums[name] = sums.get(name, 0.0) + value
      steps_run += 1
      bar.update(1)
      if "loss" in sums and "accuracy" in sums:
        postfix = dict(loss=f"{sums['loss'] / (step + 1):.3f}", acc=f"{sums['accuracy'] / (step + 1):.3f}")
        if images_per_step:
          elapsed = max(time.perf_counter() - t0, 1e-9)
          postfix["img_s"] = f"{(step + 1 - start_step) * images_per_step / elapsed:.0f}"
        bar.set_postfix(**postfix)
      if (run is not None and checkpoint_every_steps and (step + 1) % checkpoint_every_steps == 0
          and step + 1 < steps_per_epoch):
        run.save(state, Position(epoch, step + 1, sums), history)
      if stop_after_steps is not None and steps_run >= stop_after_steps:
        bar.close()
        return LoopResult(state, history, Position(epoch, step + 1, sums), finished=False)
    bar.close()
    t_end = time.perf_counter()
    steps_in_call = steps_per_epoch - start_step
    steady = (t_end - first_step_done) / (steps_in_call - 1) if steps_in_call > 1 else None
    record = end_epoch(state, EpochEnd(epoch, sums, steps_per_epoch, start_step, t_end - t0, steady), history)
    history.append(record)
    stopped = record.get("stopped")
    epoch, start_step = epoch + 1, 0
    if run is not None:
      run.log(record)
      if epoch % checkpoint_every == 0 or epoch == epochs or stopped:
        run.save(state, Position(epoch), history)
  return LoopResult(state, history, Position(epoch), finished=epoch >= epochs or stopped is not None,
                    stopped=stopped)
