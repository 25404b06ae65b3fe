"""Orbax checkpoints of a whole training or search state, with an identity that a resume must match.

A checkpoint stores the state pytree (arrays only: params, BatchNorm statistics, optimizer state, step,
raw PRNG key data, ...) and a JSON record (epoch, history, identity). ``restore_latest`` refuses a
checkpoint whose identity (config, architecture, data) differs from the run asking for it, and turns any
unreadable checkpoint into one clear :class:`NasjaxError` instead of an Orbax traceback.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from nasjax.errors import NasjaxError


def _canonical(obj: Any) -> Any:
  return json.loads(json.dumps(obj, sort_keys=True, default=str))


class Manager:
  def __init__(self, directory: str, keep: int = 2):
    self.directory = directory
    self._closed = False
    os.makedirs(directory, exist_ok=True)
    self._manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def save(self, step: int, state: Any, meta: dict) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(_canonical(meta))))
    self._manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def latest_meta(self, identity: dict, ignore: tuple[str, ...] = ()) -> tuple[int, dict] | None:
    """``(step, record)`` of the newest checkpoint, or None without one; reads only its JSON record, so a
    run can refuse a checkpoint of another identity (or an unreadable one) before building anything."""
    step = self._manager.latest_step()
    if step is None:
      return None
    where = os.path.join(self.directory, str(step))
    try:
      meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # Orbax raises many types for damaged files.
      raise NasjaxError(f"checkpoint {where} is unreadable ({type(e).__name__}: {str(e)[:200]}); move it "
                        "away to start over, or point --out at another directory") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("identity", {}), dict):
      raise NasjaxError(f"checkpoint {where} has no run record nasjax wrote; move it away to start over, or "
                        "point --out at another directory")
    stored = {k: v for k, v in meta.get("identity", {}).items() if k not in ignore}
    wanted = {k: v for k, v in _canonical(identity).items() if k not in ignore}
    if stored != wanted:
      diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
      raise NasjaxError(f"checkpoint {where} belongs to another run (differs in: {', '.join(diff)}); "
                        "resume with the same settings, or use another --out directory")
    return step, meta

  def restore_latest(self, template: Any, identity: dict, ignore: tuple[str, ...] = ()) -> tuple[Any, dict] | None:
    """Restores the newest checkpoint into ``template``'s structure, or returns None when there is none.

    ``ignore`` names identity keys a reader need not match (evaluating a trained network on other data
    does not need the training data's fingerprint).
    """
    found = self.latest_meta(identity, ignore)
    if found is None:
      return None
    step, meta = found
    where = os.path.join(self.directory, str(step))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))["state"]
    except Exception as e:
      raise NasjaxError(f"checkpoint {where} does not match this model or is damaged "
                        f"({type(e).__name__}: {str(e)[:200]})") from None
    return restored, meta

  def close(self) -> None:
    """Stops Orbax's background threads; safe to call more than once (every exit path calls it)."""
    if not self._closed:
      self._closed = True
      self._manager.close()
