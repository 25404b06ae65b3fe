"""Pure ``(arch, key) -> metrics`` estimators that every search strategy can call."""

from nasjax.estimators.train import ShortTrainingEstimator

__all__ = ["ShortTrainingEstimator"]
