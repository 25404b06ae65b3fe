"""Parallel execution of searches: whole searches vmapped over seeds on one device."""

from nasjax.parallel.population import SearchResults, check_results, make_device_search, run_on_device

__all__ = ["SearchResults", "check_results", "make_device_search", "run_on_device"]
