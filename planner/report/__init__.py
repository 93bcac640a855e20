"""The report: execute the notebooks with papermill and build the Jupyter Book (``book``)."""
