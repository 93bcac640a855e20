"""Which behaviour of the live serving stacks a stored live result measured.

A method's parameters are recorded by the runs themselves (:mod:`planner.evaluation.provenance`), but a
change to what the live replay or the HTTP server does with a request is not a parameter. Each such
change gets a revision here; every start-up of a live experiment records :data:`SERVING_REVISION`, and
the book says which changes a stored result predates (:func:`stale_serving_note`) instead of
presenting it as a measurement of the present code.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["SERVING_REVISION", "SERVING_REVISIONS", "serving_revision", "stale_serving_note"]

# revision -> what changed (revision 1: everything before revisions were recorded)
SERVING_REVISIONS: dict[int, str] = {
    2: ("a cascade is served stage by stage for a policy with early answers, and an escalated request still "
        "waiting for the second stage at its deadline gets the first stage's answer then "
        "(`planner/serving/staged.py`); before, the replay ran a cascade in one call and the HTTP server "
        "sent early answers only where its estimate of the second stage said so"),
}
SERVING_REVISION = max(SERVING_REVISIONS)


def serving_revision(startups: Iterable[Mapping[str, Any]]) -> int:
    """The oldest revision among a result's start-ups (1 where one recorded none): what all its runs had."""
    revisions = [int(s.get("serving_revision", 1)) for s in startups]
    return min(revisions, default=1)


def stale_serving_note(revision: int, what: str, staged_requests: Mapping[str, int] | None = None) -> str:
    """A sentence naming the changes ``what`` (e.g. "The live fault replays") predates; empty when none.
    ``staged_requests``: per run (e.g. "`anytime` on sst2"), how many requests a cascade answered for a
    method with early answers, the requests the change concerns."""
    later = [text for rev, text in sorted(SERVING_REVISIONS.items()) if rev > revision]
    if not later:
        return ""
    text = f"{what} predate a change of the live serving stacks: " + "; ".join(later) + ". They are reported as measured."
    if staged_requests is None:
        return text
    used = ", ".join(f"{n} ({run})" for run, n in staged_requests.items() if n)
    if not used:
        return text + " No cascade answered a request of a method with early answers there, so it would not change them."
    return text + f" The change concerns the requests a cascade answered for a method with early answers: {used}."
