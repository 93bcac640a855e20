"""Evaluation: the grid of methods x workloads x loads x deadlines x seeds (``grid``), the small
experiments behind the failure and theory chapters (``experiments``), ablations (``ablation``) and
the live-vs-simulated validation (``validation``)."""
