"""Profilers: latency distributions and per-example accuracy over the configuration space.

``space`` enumerates configurations, ``latency`` and ``accuracy`` measure them, ``roofline`` and
``fingerprint`` describe the machine, ``store`` keeps the results resumable and validated, and
``sweep`` runs it all (``python -m planner profile``). Load results with
:func:`planner.profile.store.load_bundle`.
"""
