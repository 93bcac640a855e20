"""Serving: the one batch-pick rule and the three servers that share it.

``batching`` holds the rule (which waiting requests form the next batch, with which
configuration); ``simulator`` runs it in simulated time on measured service times, ``replay`` in
real time on the real models in-process, and ``outcomes`` turns any of their per-request tables
into the run metrics.
"""
