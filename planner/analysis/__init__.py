"""Analysis of finished runs: statistics (``stats``), seed summaries (``summary``), Pareto fronts and
hypervolume (``pareto``), reading a preset's results (``results``) and figures (``plots``)."""
