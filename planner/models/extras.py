"""Optional dependency groups ("extras") some models need, and whether each is installed here.

A model with ``requires_extra`` in configs/models.yaml is used only by presets that list the extra
(:func:`planner.config.task_models`); where such a preset runs without the extra installed, every
consumer skips the model with :func:`unavailable_reason` as its one-line reason.
"""

from __future__ import annotations

from typing import Callable

from planner import config
from planner.models import mpnet

# extra -> (a function listing its packages missing here, how to install it)
EXTRAS: dict[str, tuple[Callable[[], list[str]], str]] = {
    mpnet.EXTRA: (mpnet.missing_packages, mpnet.INSTALL_HINT),
}


def unavailable_reason(model: str) -> str | None:
    """None when ``model`` needs no extra or its extra is installed, else why it is skipped (one line)."""
    extra = config.model_spec(model).requires_extra
    if extra is None:
        return None
    if extra not in EXTRAS:
        raise config.ConfigError(f"model {model!r}: requires_extra {extra!r} is not a known extra; "
                                 f"known: {sorted(EXTRAS)}")
    missing, hint = EXTRAS[extra]
    absent = missing()
    if not absent:
        return None
    return f"{model} needs the optional extra {extra!r}, not installed here (missing {', '.join(absent)}); {hint}"
