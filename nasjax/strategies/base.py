"""The strategy contract: three pure functions over an explicit pytree state."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Strategy(NamedTuple):
  """``init(key) -> state``; ``ask(state, key) -> (archs[P, D], state)``; ``tell(state, archs, fitness)``.

  Fitness is maximised (an accuracy); failed evaluations arrive as NaN and never win.
  """
  init: Callable[[Any], Any]
  ask: Callable[[Any, Any], tuple[Any, Any]]
  tell: Callable[[Any, Any, Any], Any]
  name: str = "strategy"
