"""User-facing errors.

Every problem caused by what a user passed in (a genotype string, a data file, a checkpoint, a CLI flag)
is raised as :class:`NasjaxError`, so the CLI can print one clear line instead of a traceback from inside
JAX, and library callers can catch one type. A training or search whose loss became NaN or Inf raises
:class:`DivergenceError`, a :class:`NasjaxError` that says where: a search driver records such a candidate
as failed (the same key would diverge again) instead of telling it apart by its message.
"""


class NasjaxError(ValueError):
  """A problem with user input: the message names what was wrong and what is accepted."""


class DivergenceError(NasjaxError):
  """A metric (the training loss, ...) became NaN or Inf at ``epoch``, ``step`` (both counted from 1)."""

  def __init__(self, message: str, metric: str = "loss", value: float = float("nan"), epoch: int = 0,
               step: int = 0):
    super().__init__(message)
    self.metric, self.value, self.epoch, self.step = metric, value, epoch, step

  def __reduce__(self):  # picklable with its fields (Ray ships errors between processes)
    return type(self), (str(self), self.metric, self.value, self.epoch, self.step)
