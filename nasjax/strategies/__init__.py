"""Discrete search strategies as ``init / ask / tell`` over explicit state (evosax style)."""

from nasjax.strategies.base import Strategy
from nasjax.strategies.random_search import random_search

__all__ = ["Strategy", "random_search"]
