"""Anytime inference planner: profile inference configurations, then pick one per request deadline."""

__version__ = "0.1.0"
