"""User-facing errors.

Every problem caused by what a user passed in (a genotype string, a data file, a checkpoint, a CLI flag)
is raised as :class:`NasjaxError`, so the CLI can print one clear line instead of a traceback from inside
JAX, and library callers can catch one type.
"""


class NasjaxError(ValueError):
  """A problem with user input: the message names what was wrong and what is accepted."""
