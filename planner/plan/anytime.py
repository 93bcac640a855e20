"""The anytime planner: online, queue-aware, drift-calibrated configuration choice per batch.

Per batch it picks the configuration that maximises the expected number of correct answers
delivered on time among the requests it is about to affect, with four ingredients the static rule
(``seed_p95``: most accurate configuration whose profiled p95 meets the deadline) lacks:

1. **Queue and slack.** The window is the waiting requests in service order (their slacks from the
   server) padded with the arrivals expected while they are served (recent rate, the head's relative
   deadline). Configuration ``c`` (batch ``B_c``, ``k`` servers) serves window position ``p`` in round
   ``r_c(p) = ceil(ceil((p + 1) / B_c) / k)``; its value is
   ``accuracy_c * sum_p P(r_c(p) * X_c <= slack_p)`` (``accuracy_c``: the calibration part's,
   :mod:`planner.splits`), with ``X_c`` the configuration's *current*
   single-batch service time. The probability comes from the profiled latency distribution (a
   quantile table), not from one percentile, so a configuration whose tail is long but whose median
   is short is valued for what it delivers on average.

   With ``continuation`` (the default) a candidate serves only the head batch, and every later
   position is valued as served after it at the per-item service time the policy has been achieving
   (the drain configuration's before the first batch) and at the drain configuration's accuracy:
   a slow choice pays for the server time it takes from the requests behind it. With
   ``expected_arrivals`` (the default) the window goes on with the nearest
   :data:`EXPECTED_ARRIVALS` arrivals expected while it is served, each valued over the recent mix
   of relative deadlines met at the head (:data:`MIX_LEVELS` quantiles), not at the head's own.
   With ``arrival_spread`` (the default) the ``j``-th of them arrives at each of the
   :data:`ARRIVAL_LEVELS` quantiles of a Poisson process's ``j``-th arrival time at the recent rate
   (a Gamma(j, rate) law), equally weighted; without it, at exactly ``j / recent rate``. Why: at
   light load the next arrival is due after the slow candidate's batch on average, so the evenly
   spaced padding saw no conflict, while 63 % (1 - 1/e) of Poisson inter-arrival times are shorter than the mean; measured on the
   full SST-2 profile (steady-mixed, load 0.5, 60 ms: 15 rps, classes at 30/60/180 ms), the policy
   took MPNet (31 ms median) for relaxed heads and shed 5 % of the 30 ms class that arrived behind
   it, where a fixed cascade at 2.5 ms shed none. Together they price the relaxed request of a mixed
   trace that would take the large model while tight requests arrive behind it. Without both, the
   whole window is valued at the candidate (the rule of ``slack_aware``).
   With ``arrival_model="empirical"`` the expected arrivals' times follow the law of the recent gaps
   instead of a Poisson process at the recent rate (a renewal process conditioned on the time since
   the last arrival, :mod:`planner.plan.arrivals`): under bursty traffic a clump's next dozen
   requests arrive within a millisecond or two, which the mean rate spreads over tens of
   milliseconds, so the policy took a slow configuration for a clump's first few requests and made
   the rest wait (CIFAR-10 bursty-cv8 0.8 @ 12 ms, development seeds 0/1 and examples: 0.647 with the
   Poisson law, 0.756 with the gaps'; the full grid's 10 seeds: 0.658 before, 0.758 after, against the
   best fixed configuration's 0.705).
2. **Online calibration.** :class:`ServiceTimeEstimator` keeps a machine-wide scale and a
   per-configuration residual (exponentially weighted, in log space) from the service times the
   server reports after every batch (``observe``); ``X_c`` is the profiled distribution times that
   scale. An observation is compared with the profile's median (with ``geometric_reference``, its
   geometric mean: the centre a log-space average of the profile's own draws settles at, which for a
   cascade's two-humped times is not the median; the preset keeps the median, see that study). A
   start-up scale (re-timed reference, see :mod:`planner.profile.reference`) sets the prior before
   the first request. In the simulator the estimator sees simulated service times, in
   live replay the measured ones: the same code.
3. **Admission and anytime answers.** A waiting request whose slack is below the fastest
   configuration's low quantile (:meth:`AnytimePolicy.shed_below_ms`) is shed at once with a reason,
   instead of being served late at the expense of requests that can still make it; a cascade's
   first-stage answer goes out on time when its second stage would be late (``early_answers``).
   With ``cancel_at_deadline`` (the default) the policy asks the server to stop a batch that would
   answer none of its requests on time, at the latest member's deadline (where the runtime can stop
   a running call: ONNX Runtime; in the simulator, the live replay and the HTTP server alike,
   :mod:`planner.serving.stopping`), so a request tried on a draw that overruns costs the server only the time its
   deadline left; such a batch teaches the calibration only a lower bound on its service time
   (:meth:`observe` with ``cancelled``). Why: at tight deadlines the member cut-off shed most
   requests to keep late answers few (SST-2 at 3 ms: 6 % answered on time, against 37 % for the best
   fixed configuration, which answered 60 % late); with the server stopping the draws that overrun,
   a try is cheap and nobody is answered late.
   With ``stoppable_quantile`` a one-request call the server can stop has its member cut-off at that
   quantile of its own service time (never above the usual one, below): it answers on time or
   nobody, so the late-share target has nothing to hold it to, and it is tried where the usual
   cut-off, steered up by the late answers of other calls, would shed. The live replay and the HTTP
   server stop such calls too (:mod:`planner.serving.stopping`), so they make the same tries.
   A request about to join a batch is shed when its slack is below the chosen configuration's
   ``q``-quantile (:meth:`AnytimePolicy.member_cutoff_ms`). With ``late_target`` set, ``q`` is
   steered online (Robbins–Monro) so that the share of served requests answered late settles at the
   target: each late answer raises ``q`` by ``late_step``, each on-time one lowers it by
   ``late_step * late_target / (1 - late_target)``; it stays within [0.5, 0.95], the quantile table's
   range. Without it, ``q`` is fixed at ``member_quantile``.
   The choice is valued under the same cut-off: a head-batch position whose slack is below candidate
   ``c``'s cut-off counts nothing for ``c`` (it would be shed, not served). Why: a choice blind to its
   own cut-off took the most accurate configuration while ``q`` was high after a late burst, shed its
   whole batch (the queue is a request or two at moderate load) and served nothing, pick after pick,
   although a cheaper configuration met every cut-off (measured live, SST-2 over HTTP at 50 q/s,
   20 ms: the last 100 of 1,000 queries almost all shed). With it, a high ``q`` moves the choice
   to the cheaper path instead of shedding. With ``shed_frees_time`` such a member also takes no
   place: the serving rule fills the batch from the requests behind it
   (:func:`planner.serving.batching.pick_batch`), so the valuation does too and those behind move up;
   and a position behind the head batch that the continuation would finish after its deadline (at
   the median) is valued as shed when its turn comes, taking no server time, instead of as served
   late in the way of those behind it. Why: valued in place, an oldest request too late for every
   cut-off held up the whole window, no candidate was worth anything, the choice fell to the drain
   configuration, and its larger cut-off shed every waiting request while the server stood idle
   (simulated, CIFAR-10 at 2 ms, load 1.3: requests with 1.3-1.7 ms of slack shed beside a 0.9 ms
   configuration); and a choice that served the oldest request would be charged for every hopeless
   one behind it, so a slower batch that shed them all looked as good.
   Shedding must not blind the calibration: the scale only comes down from batches served, so once a
   slowdown (a CPU hog, a stale start-up prior) pushes the shed threshold above every deadline, a
   policy that sheds everything would never observe that the machine has recovered (measured live:
   hit-rate 0.000 for the 13 s after a 10 s hog ended). After :data:`PROBE_AFTER` picks in a row
   without a batch served (all their requests shed, at admission or as batch members), the next pick
   is a probe: both thresholds are taken at the most hopeful speed known (the profile's, or the
   start-up re-timing's) instead of the learned one, and so is its choice of configuration (the most
   accurate whose cut-off the head meets); its batch is the observation that lets the scale come
   back. Where the learned speed is the profile's (the simulator), a probe sheds what any pick would.
4. **Switching.** Serving a configuration right after another costs more than serving it again:
   its weights and code are out of the caches (measured live: MobileNetV2 ONNX int8 at batch 1 took
   2.0x as long after a ResNet18 batch, MiniLM-L3 3.4x after another text model,
   ``benchmarks/bench_switch_cost.py``). With ``switch_aware`` (the default) the policy learns that
   cost from what it observes: a batch whose configuration differs from the previous batch's is
   compared with the calibrated estimate for that configuration, and the ratio feeds a second
   estimator of the same kind (machine-wide and per configuration); such a batch teaches the service
   time estimator its time divided by that factor. A candidate other than the one just served has its
   head batch valued at the learned factor (when any exceeds :data:`SWITCH_MIN_FACTOR`), so a switch
   must earn its cost. The simulator draws service times without a switching cost, so there the
   factors stay near 1 and the rule is idle; one server is assumed (the previous batch is the last
   one observed).
5. **Speed.** Candidates are pruned once to those no other candidate dominates (at least as
   accurate, at least as large a batch, no slower at every quantile): dominance survives a common
   scale, so the pruned set is rebuilt only when per-configuration residuals move. A decision is one
   compiled pass (:func:`planner.plan.anytime_kernel.best_candidate`) over the (front x quantiles x
   window) finish times, cached per servers (one table per number of requests left, up to the largest
   batch); the member cut-offs (item 3) enter it as a vector kept per observation, applied while the
   head batch fills. The pass replaced a dozen numpy calls whose per-call overhead dominated a decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import gmean

from planner.plan.anytime_kernel import best_candidate
from planner.plan.arrivals import GAP_MEMORY, EmpiricalArrivals
from planner.plan.failure import NotFittedError, PlannerError
from planner.plan.policies import OnlinePolicy, PolicyContext, PolicyNeeds, candidate_table
from planner.schema import CANCELLABLE_RUNTIMES, PLANNING_ACCURACY, ProfileBundle

# the latency distribution each candidate is valued with (six points: the decision stays cheap)
QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.65, 0.8, 0.95)
# head deadlines remembered for the expected arrivals' mix, and the levels of that mix they are valued at
DEADLINE_MEMORY = 64
MIX_LEVELS = np.array([0.125, 0.375, 0.625, 0.875])
# the quantiles of each expected arrival's time (Poisson at the recent rate) it is valued at, equally weighted
ARRIVAL_LEVELS = MIX_LEVELS
# a learned switching factor below this is noise (and keeps the decision at its usual cost)
SWITCH_MIN_FACTOR = 1.05
# how strongly each observation pulls its configuration's residual toward 0 (a share of the rate)
RESIDUAL_SHRINK = 0.25
# picks in a row that shed every waiting request before one is served to re-measure the machine
PROBE_AFTER = 32
# how many expected arrivals pad a short window (the nearest ones: a head batch's choice delays them most)
EXPECTED_ARRIVALS = 16
# the law of the expected arrivals' times: a Poisson process at the recent rate, or the recent gaps' own
# (a renewal process, planner.plan.arrivals: sees a burst coming)
ARRIVAL_MODELS = ("poisson", "empirical")


def expected_arrival_times(n: int, spread: bool) -> np.ndarray:
    """(A, n) float32: equally likely arrival times of the next ``n`` arrivals, in mean inter-arrival
    times from now. ``spread``: the :data:`ARRIVAL_LEVELS` quantiles of a Poisson process's ``j``-th
    arrival time, Gamma(j, 1), one row per level; else one row ``1, 2, ..., n`` (evenly spaced)."""
    j = np.arange(1, n + 1, dtype=float)
    if not spread:
        return j[None, :].astype(np.float32)
    from scipy.special import gammaincinv  # the inverse of the regularised lower incomplete gamma

    return np.ascontiguousarray(gammaincinv(j[None, :], ARRIVAL_LEVELS[:, None]), dtype=np.float32)


class ServiceTimeEstimator:
    """Current service time of each configuration relative to its profile, learned online.

    ``log(observed / reference)`` of every finished batch (``reference_ms``: the profile's median, or its
    geometric mean, see the policy's ``geometric_reference``) updates a machine-wide log-scale
    (all configurations slow down together when the CPU is shared or throttled) and a residual of
    that configuration (exponentially weighted with ``halflife`` observations). ``scale(c)`` is
    ``exp(global + residual_c)``; a configuration never observed follows the machine.

    Each update also shrinks the observed configuration's residual toward 0 (by
    :data:`RESIDUAL_SHRINK` of the learning rate). Why: without it the split between the two is not
    identified when one configuration is served alone (``global - residual`` never changes), so a
    slowdown the global once learned (a CPU hog, a stale start-up prior) would stay attached to every
    configuration not served since, however fast the served one runs again; with it, a change shared
    by the served configurations settles in the global.
    """

    def __init__(self, reference_ms: Mapping[str, float], halflife: float = 8.0, startup_scale: float = 1.0):
        if not (isinstance(halflife, (int, float)) and halflife > 0):
            raise PlannerError(f"halflife must be a positive number of observations, got {halflife!r}")
        if not (isinstance(startup_scale, (int, float)) and math.isfinite(startup_scale) and startup_scale > 0):
            raise PlannerError(f"startup_scale must be a positive finite factor, got {startup_scale!r}")
        bad = {c: v for c, v in reference_ms.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise PlannerError(f"reference service times must be positive ms, bad for {list(bad)[:3]}")
        self.reference_ms = dict(reference_ms)
        self.alpha = 1.0 - 0.5 ** (1.0 / float(halflife))
        self.log_global = math.log(startup_scale)
        self.log_residual: dict[str, float] = {}
        self.n_observed = 0

    def observe(self, config_id: str, service_ms: float) -> None:
        reference = self.reference_ms.get(config_id)
        if reference is None or not (math.isfinite(service_ms) and service_ms > 0):
            return  # not a candidate (or a failed call): nothing to learn from
        ratio = math.log(service_ms / reference)
        residual = self.log_residual.get(config_id, 0.0)
        self.log_global += self.alpha * ((ratio - residual) - self.log_global)
        self.log_residual[config_id] = (residual + self.alpha * ((ratio - self.log_global) - residual)
                                        - RESIDUAL_SHRINK * self.alpha * residual)
        self.n_observed += 1

    def scale(self, config_id: str) -> float:
        return math.exp(self.log_global + self.log_residual.get(config_id, 0.0))

    def scales(self, config_ids: Sequence[str]) -> np.ndarray:
        return np.exp(self.log_global + np.array([self.log_residual.get(c, 0.0) for c in config_ids]))


def dominance_front(accuracy: np.ndarray, batch: np.ndarray, quantiles_ms: np.ndarray,
                    accuracy_tolerance: float = 0.0) -> np.ndarray:
    """Indices of candidates no other candidate dominates (more or equally accurate, a batch at least
    as large, and no slower at any quantile, strictly better somewhere). Ties keep the first.

    With ``accuracy_tolerance`` a candidate is also dominated by one that is faster (no slower at any
    quantile, strictly faster at one, a batch at least as large) and at most that much less accurate:
    an accuracy difference below what the calibration examples can resolve does not buy server time
    (epsilon-dominance). Faster-and-close cannot hold both ways, so no two candidates remove each other."""
    n = len(accuracy)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        no_slower = (batch >= batch[i]) & (quantiles_ms <= quantiles_ms[i]).all(axis=1)
        better = (accuracy >= accuracy[i]) & no_slower
        strictly = (accuracy > accuracy[i]) | (batch > batch[i]) | (quantiles_ms < quantiles_ms[i]).any(axis=1)
        same = better & ~strictly
        dominated_by_other = (better & strictly).any() or same[:i].any()
        if accuracy_tolerance > 0 and not dominated_by_other:
            faster = no_slower & (quantiles_ms < quantiles_ms[i]).any(axis=1)
            dominated_by_other = bool((faster & (accuracy >= accuracy[i] - accuracy_tolerance)).any())
        keep[i] = not dominated_by_other
    return np.flatnonzero(keep)


class AnytimePolicy(OnlinePolicy):
    """The proposed method (see the module docstring). Estimator API: parameters in ``__init__``,
    :meth:`fit` reads the candidates from a profile bundle; a fitted policy serves one trace at a
    time (its calibration state belongs to that trace: use :meth:`fresh` for the next)."""

    def __init__(self, task: str, lookahead: int = 64, halflife: float = 8.0, shed: bool = True,
                 early_answers: bool = True, expected_arrivals: bool = True, startup_scale: float = 1.0,
                 refront_every: int = 32, member_quantile: float | None = 0.65,
                 late_target: float | None = None, late_step: float = 0.02, continuation: bool = True,
                 switch_aware: bool = True, accuracy_tolerance: float = 0.0, arrival_spread: bool = True,
                 cancel_at_deadline: bool = True, stoppable_quantile: float | None = None,
                 arrival_model: str = "poisson", shed_frees_time: bool = False,
                 geometric_reference: bool = False, name: str = "anytime"):
        if isinstance(lookahead, bool) or not isinstance(lookahead, (int, np.integer)) or lookahead < 1:
            raise PlannerError(f"lookahead must be an integer >= 1, got {lookahead!r}")
        self.task, self.lookahead, self.halflife, self.name = task, int(lookahead), float(halflife), name
        self.shed, self.early_answers, self.expected_arrivals = bool(shed), bool(early_answers), bool(expected_arrivals)
        if isinstance(startup_scale, bool) or not isinstance(startup_scale, (int, float, np.floating)) \
                or not (math.isfinite(startup_scale) and startup_scale > 0):
            raise PlannerError(f"startup_scale must be a positive finite factor, got {startup_scale!r}")
        # the machine's speed now over the profile's (planner.profile.reference): 1 in the simulator,
        # whose service times come from the profile itself; the re-timed reference in live replay
        self.startup_scale, self.refront_every = float(startup_scale), int(refront_every)
        if member_quantile is not None and member_quantile not in QUANTILES:
            raise PlannerError(f"member_quantile must be one of {QUANTILES} or None, got {member_quantile!r}")
        self.member_quantile = member_quantile
        if late_target is not None and (member_quantile is None or not 0 < late_target < 1):
            raise PlannerError(f"late_target must be a share in (0, 1) and needs a member_quantile, got "
                               f"late_target={late_target!r}, member_quantile={member_quantile!r}")
        if not (isinstance(late_step, (int, float)) and 0 < late_step < 1):
            raise PlannerError(f"late_step must lie in (0, 1), got {late_step!r}")
        self.late_target, self.late_step = late_target, float(late_step)
        self.continuation, self.switch_aware = bool(continuation), bool(switch_aware)
        self.arrival_spread = bool(arrival_spread)
        if isinstance(accuracy_tolerance, bool) or not isinstance(accuracy_tolerance, (int, float)) \
                or not 0 <= accuracy_tolerance < 1:
            raise PlannerError(f"accuracy_tolerance must be a share in [0, 1), got {accuracy_tolerance!r}")
        self.accuracy_tolerance = float(accuracy_tolerance)
        self.cancel_at_deadline = bool(cancel_at_deadline)
        if stoppable_quantile is not None and (stoppable_quantile not in QUANTILES or not self.cancel_at_deadline):
            raise PlannerError(f"stoppable_quantile must be one of {QUANTILES} or None, and needs "
                               f"cancel_at_deadline, got {stoppable_quantile!r} "
                               f"(cancel_at_deadline={self.cancel_at_deadline})")
        self.stoppable_quantile = stoppable_quantile
        if arrival_model not in ARRIVAL_MODELS or (arrival_model != "poisson" and not self.expected_arrivals):
            raise PlannerError(f"arrival_model must be one of {ARRIVAL_MODELS}, and other than 'poisson' needs "
                               f"expected_arrivals, got {arrival_model!r} (expected_arrivals={self.expected_arrivals})")
        self.arrival_model = arrival_model
        self.shed_frees_time = bool(shed_frees_time)
        self._skip_q = QUANTILES.index(0.5) if self.shed_frees_time else -1
        self.geometric_reference = bool(geometric_reference)
        self.needs = PolicyNeeds(lookahead=self.lookahead, observes=True, sheds=self.shed,
                                 early_answers=self.early_answers, cancels=self.cancel_at_deadline,
                                 arrival_history=GAP_MEMORY if arrival_model == "empirical" else 0)

    # ---- fit ----------------------------------------------------------------------------------
    def fit(self, bundle: ProfileBundle) -> "AnytimePolicy":
        """Candidates of the task with measured accuracy and latency samples; their quantile tables."""
        table = candidate_table(bundle, self.task, 50.0)
        samples = bundle.samples[bundle.samples["config_id"].isin(table["config_id"])]
        grid = samples.groupby("config_id")["latency_ms"].quantile(list(QUANTILES)).unstack()
        self.table_ = table.assign(**{f"q{q:g}": grid.loc[table["config_id"], q].to_numpy() for q in QUANTILES})
        self._all_ids = table["config_id"].tolist()
        self._all_index = {c: i for i, c in enumerate(self._all_ids)}
        self._all_acc = table[PLANNING_ACCURACY].to_numpy(dtype=float)
        self._all_batch = table["batch_size"].to_numpy(dtype=np.int64)
        self._all_q = grid.loc[table["config_id"], list(QUANTILES)].to_numpy(dtype=float)
        runtime = bundle.profiles.set_index("config_id")["runtime"].reindex(self._all_ids).to_numpy()
        # one-request calls the server stops at the deadline answer on time or nobody: their cut-off is
        # at most their stoppable_quantile (+inf: no such bound)
        stoppable = np.isin(runtime, CANCELLABLE_RUNTIMES) & (self._all_batch == 1)
        self._all_try_ms = np.full(len(self._all_ids), np.inf) if self.stoppable_quantile is None else \
            np.where(stoppable, self._all_q[:, QUANTILES.index(self.stoppable_quantile)], np.inf)
        # what an observation is compared with: the log-space calibration settles at the mean log ratio,
        # so a profile's own draws teach scale 1 only against its geometric mean (see ServiceTimeEstimator)
        centre = samples.groupby("config_id")["latency_ms"].agg(gmean) if self.geometric_reference else grid[0.5]
        self._reference = dict(zip(self._all_ids, centre.loc[table["config_id"]].to_numpy(dtype=float)))
        self._no_pad = np.zeros(0, dtype=np.float32)  # no expected arrivals to value
        self._pad_arrival = expected_arrival_times(EXPECTED_ARRIVALS, self.arrival_spread)
        self.fresh()
        self._load_kernel()
        return self

    def _load_kernel(self) -> None:
        """Run the compiled valuation once on the fitted arrays, with the argument types a decision
        passes, so the first decision of a trace costs what the others cost. Why: the kernel is
        compiled (or read from numba's disk cache) at its first call, which took 150-230 ms; behind
        the HTTP server that first batch's "service time" taught the estimator a machine 50x slower
        and the policy shed the next 30 requests (measured under LoadGen, 2026-12-05). After the first
        policy of a process it costs one decision. It leaves no state behind: the tables it builds are
        dropped, so the first decision builds them from what it knows then, as before."""
        servers, window = 1, 1
        finish = self._continuation_latency(servers, window) if self.continuation else self._round_latency(servers)
        self._best(finish, self._no_extra, np.zeros(window, dtype=np.float64), 1.0, 1.0, 1, self._no_pad,
                   self._pad_arrival)
        self._ct.clear()
        self._rl.clear()
        self._cut = None

    def fresh(self) -> "AnytimePolicy":
        """Reset the online state (calibration, front) for a new trace; the fitted candidates stay."""
        if not hasattr(self, "table_"):
            raise NotFittedError(f"{self!r} is not fitted; call fit(bundle) first")
        self.estimator_ = ServiceTimeEstimator(self._reference, self.halflife, self.startup_scale)
        self._since_refront = 0
        self.quantile_ = self.member_quantile
        self._seen_deadlines = np.full(DEADLINE_MEMORY, np.nan)
        self._n_seen = 0
        self._pad_deadlines: np.ndarray | None = None
        self._item_ms: float | None = None
        # cold / warm service time after a switch, learned like the service times (log-space EWMA)
        self.switch_ = ServiceTimeEstimator({c: 1.0 for c in self._all_ids}, self.halflife)
        self._last_config: str | None = None
        self._extra: np.ndarray | None = None
        self._empty_picks = 0      # shed_below_ms calls (picks) since the last batch served
        self._probing = False      # this pick is a probe: both thresholds at the most hopeful known speed
        self.n_probes = 0
        self._arrivals = EmpiricalArrivals(EXPECTED_ARRIVALS, ARRIVAL_LEVELS) if self.arrival_model == "empirical" \
            else None
        self._build_front()
        return self

    def _build_front(self) -> None:
        residual = self.estimator_.scales(self._all_ids) / math.exp(self.estimator_.log_global)
        scaled = self._all_q * residual[:, None]
        front = dominance_front(self._all_acc, self._all_batch, scaled, self.accuracy_tolerance)
        self._ids = [self._all_ids[i] for i in front]
        self._acc = self._all_acc[front]
        self._batch = self._all_batch[front]
        self._q = scaled[front]                      # (C, Q) at the machine scale 1
        self._rl: dict[int, np.ndarray] = {}
        self._ct: dict[int, tuple] = {}  # per servers: (tables, which are built)
        self._drain = int(np.argmax(self._batch / self._q[:, QUANTILES.index(0.5)]))
        self._max_batch = int(self._batch.max())
        self._fastest_low = float(self._q[:, 0].min())
        self._front_index = {c: i for i, c in enumerate(self._ids)}
        self._front_rows = front
        self._no_extra = np.zeros(self._q.shape, dtype=np.float32)
        self._cut: np.ndarray | None = None
        if hasattr(self, "switch_"):
            self._refresh_switch_extra()

    def _round_latency(self, servers: int) -> np.ndarray:
        """(1, C, Q, lookahead): rounds to reach each window position times each latency quantile
        (positions innermost and contiguous, so the per-decision comparison streams through memory);
        one table whatever is left to serve."""
        table = self._rl.get(servers)
        if table is None:
            p = np.arange(self.lookahead)
            batches = -(-(p[None, :] + 1) // self._batch[:, None])   # ceil((p + 1) / B)
            rounds = -(-batches // servers)                           # ceil(batches / k)
            table = self._rl[servers] = np.ascontiguousarray(
                (self._q[:, :, None] * rounds[:, None, :])[None], dtype=np.float32)
        return table

    def _continuation_latency(self, servers: int, waiting: int) -> np.ndarray:
        """(H, C, Q, lookahead) finish times when candidate ``c`` serves only the head batch (the
        first ``min(B_c, w)`` of the ``w`` requests it leaves in, done after ``X_c``) and every later
        one is served after it at the per-item service time this policy has been achieving
        (:meth:`observe`; before any, the drain configuration's): ``X_c / k + (p - n_c + 1) * item / k``;
        one table per ``w`` up to the largest batch (``H`` of them: with ``shed_frees_time`` a
        candidate's cut-off sheds some of the ``waiting`` requests, and each candidate reads the table
        of what it leaves). Tables are built when a decision first needs one (with ``shed_frees_time``
        all of them; without, only that for ``waiting``, which is all such a decision reads) and kept
        per servers until the front is rebuilt (every ``refront_every`` observations), so ``item`` is
        the estimate when they were built. Why: a slow configuration costs the requests behind it the server
        time it takes, which valuing the whole window at ``c`` misses when the window is short (light
        load, arrivals still to come); and the positions behind are served by what the policy will
        choose for them, not by the fastest configuration (too hopeful: more late)."""
        entry = self._ct.get(servers)
        if entry is None:
            shape = (self._max_batch + 1, len(self._batch), len(QUANTILES), self.lookahead)
            entry = self._ct[servers] = (np.zeros(shape, dtype=np.float32), [False] * shape[0])
        tables, built = entry
        top = min(waiting, self._max_batch)
        if not built[top]:
            # with shed_frees_time every table at once: candidates that shed different numbers of the
            # waiting read different tables, which must hold the same per-item time to be compared
            for left in (range(len(built)) if self.shed_frees_time else (top,)):
                tables[left], built[left] = self._finish_table(servers, left), True
        return tables

    def _finish_table(self, servers: int, left: int) -> np.ndarray:
        """(C, Q, lookahead): :meth:`_continuation_latency`'s table for ``left`` requests left to serve."""
        p = np.arange(self.lookahead)
        head_n = np.minimum(self._batch, left)[:, None]                               # (C, 1)
        after = np.maximum(p[None, :] - head_n, 0)                                    # tail index
        if self._item_ms is not None:
            tail = (after + 1) * (self._item_ms / servers)                            # (C, W)
        else:
            drain_rounds = -(-(-(-(after + 1) // int(self._batch[self._drain]))) // servers)
            tail = drain_rounds * self._q[self._drain, QUANTILES.index(0.5)]
        head = p[None, :] < head_n                                                    # (C, W)
        x = self._q[:, :, None]                                                       # (C, Q, 1)
        return np.where(head[:, None, :], x, x / servers + tail[:, None, :]).astype(np.float32)

    def _record_deadline(self, deadline_ms: float) -> None:
        """Remember the relative deadlines met at the head: the expected arrivals take the recent mix
        (in a trace of request classes, a relaxed head does not stand for what comes next)."""
        self._seen_deadlines[self._n_seen % DEADLINE_MEMORY] = deadline_ms
        self._n_seen += 1
        if self._n_seen & (self._n_seen - 1) == 0 or self._n_seen % DEADLINE_MEMORY == 0:  # 1, 2, 4, ... then every 64
            seen = self._seen_deadlines[: min(self._n_seen, DEADLINE_MEMORY)]
            self._pad_deadlines = np.quantile(seen, MIX_LEVELS, method="inverted_cdf").astype(np.float32)

    # ---- online -------------------------------------------------------------------------------
    def observe(self, config_id: str, batch_n: int, service_ms: float, n_late: int = 0,
                cancelled: bool = False) -> None:
        self._empty_picks = 0  # a batch was served: the calibration is not blind
        if cancelled:
            self._observe_cancelled(config_id, service_ms)
            return
        switched = self._last_config is not None and config_id != self._last_config
        self._last_config = config_id
        warm_ms = service_ms
        if self.switch_aware and switched and config_id in self._all_index and math.isfinite(service_ms) \
                and service_ms > 0:
            expected = self.estimator_.reference_ms[config_id] * self.estimator_.scale(config_id)
            self.switch_.observe(config_id, service_ms / expected)
            warm_ms = service_ms / max(self.switch_.scale(config_id), 1.0)
        self.estimator_.observe(config_id, warm_ms)
        if switched and self.switch_aware:
            self._refresh_switch_extra()
        if math.isfinite(service_ms) and service_ms > 0 and batch_n > 0:  # per item, at the profiles' scale
            item = service_ms / batch_n * math.exp(-self.estimator_.log_global)
            self._item_ms = item if self._item_ms is None else self._item_ms + self.estimator_.alpha * (item - self._item_ms)
        if self.late_target is not None:
            on_time = batch_n - n_late
            push = n_late - on_time * self.late_target / (1.0 - self.late_target)
            self.quantile_ = min(QUANTILES[-1], max(0.5, self.quantile_ + self.late_step * push))
        self._cut = None  # q and the scales moved: the cut-offs are recomputed at the next pick
        self._since_refront += 1
        if self._since_refront >= self.refront_every:  # residuals moved: dominance may have changed
            self._since_refront = 0
            self._build_front()

    def _observe_cancelled(self, config_id: str, ran_ms: float) -> None:
        """A batch the server stopped at the deadline ran ``ran_ms`` and would have run longer: a lower
        bound on its service time. It teaches the estimator only where it is above the current
        estimate (the median at the learned scale), and then as if it were the service time, which
        still under-states it; below the estimate it says nothing. Why: taken as a service time it
        would teach a faster machine the more often batches are cut short, and ignored, a slowdown
        that cuts every batch short (a CPU hog) would never be learned. It is not a late answer (none
        was sent), so the late share the cut-off is steered by does not move."""
        i = self._all_index.get(config_id)
        if i is None or not (math.isfinite(ran_ms) and ran_ms > 0):
            return
        if ran_ms > self._all_q[i, QUANTILES.index(0.5)] * self.estimator_.scale(config_id):
            self.estimator_.observe(config_id, ran_ms)
            self._cut = None

    def shed_below_ms(self) -> float:
        """The fastest configuration's 5 % quantile at the current machine scale: less slack than
        that, and no configuration is likely to answer in time. After :data:`PROBE_AFTER` picks
        without a batch served, a probe (see the module docstring)."""
        self._empty_picks += 1
        self._probing = self._empty_picks > PROBE_AFTER
        if self._probing:  # the threshold at the most hopeful speed known: the profile's or the start-up one
            self._empty_picks = 0
            self.n_probes += 1
            return float(self._all_q[:, 0].min()) * self._hopeful_scale()
        return self._fastest_low * math.exp(self.estimator_.log_global)

    def member_cutoff_ms(self, config_id: str) -> float:
        """The chosen configuration's ``member_quantile`` at the current scale: a request with less
        slack would more likely than not be late in this batch, so it is shed rather than served late.
        In a probe, at the most hopeful speed known instead (see :meth:`shed_below_ms`)."""
        if self.member_quantile is None:
            return -math.inf
        i = self._all_index[config_id]
        scale = self._hopeful_scale() if self._probing else self.estimator_.scale(config_id)
        cut = float(self._at_member_quantile(self._all_q[i]))
        if not self._probing:  # a stoppable call is tried from its own quantile, never above the usual
            cut = min(cut, float(self._all_try_ms[i]))
        return cut * scale

    def _at_member_quantile(self, tables: np.ndarray) -> np.ndarray:
        """Quantile tables (``(..., len(QUANTILES))``, one row per configuration) read at the current
        member quantile, linear between the tabled quantiles and held at their ends: the usual member
        cut-off at the profile's scale. One reading for :meth:`member_cutoff_ms` and :meth:`_cutoffs`."""
        q = min(max(self.quantile_, QUANTILES[0]), QUANTILES[-1])
        j = min(int(np.searchsorted(QUANTILES, q, side="right")) - 1, len(QUANTILES) - 2)
        w = (q - QUANTILES[j]) / (QUANTILES[j + 1] - QUANTILES[j])
        return tables[..., j] * (1.0 - w) + tables[..., j + 1] * w

    def _cutoffs(self) -> np.ndarray:
        """(C,) float32: each front candidate's member cut-off (:meth:`member_cutoff_ms`, at the machine
        scale 1 the decision compares slacks at), -inf for all without shedding; recomputed once per
        observation, not per pick."""
        if self._cut is not None:
            return self._cut
        if not (self.shed and self.member_quantile is not None):
            self._cut = np.full(len(self._ids), -np.inf, dtype=np.float32)
        else:
            residual = self.estimator_.scales(self._ids) / math.exp(self.estimator_.log_global)
            usual = self._at_member_quantile(self._all_q[self._front_rows]) * residual
            # a stoppable call is tried from its own quantile, never above the usual cut-off
            self._cut = np.minimum(usual, self._all_try_ms[self._front_rows] * residual).astype(np.float32)
        return self._cut

    def _probe_choice(self, head_slack_ms: float) -> str:
        """A probe's configuration, chosen as its thresholds are taken (the profile's quantiles at the
        most hopeful speed): the most accurate whose member cut-off the head's slack meets, else the
        one with the lowest cut-off. Why not the usual rule: it values candidates at the learned speed
        and per-configuration residuals, which are what is blind; every candidate looks late there, the
        choice falls to the drain configuration, and its large batch sheds the probe's request as a
        member (measured live, CIFAR-10 at 3 ms: one batch served in 22 s)."""
        cutoffs = np.array([np.interp(self.quantile_, QUANTILES, row) for row in self._all_q]) * self._hopeful_scale()
        # (a probe is one pick in PROBE_AFTER + 1 at most, so the per-row interpolation stays off the hot path)
        fits = np.flatnonzero(cutoffs <= head_slack_ms)
        if len(fits) == 0:
            return self._all_ids[int(np.argmin(cutoffs))]
        best = fits[np.lexsort((cutoffs[fits], -self._all_acc[fits]))[0]]  # most accurate, then fastest
        return self._all_ids[int(best)]

    def _hopeful_scale(self) -> float:
        """The fastest the machine is known to run: the profile's speed or the start-up re-timing's."""
        return min(self.startup_scale, 1.0)

    def __call__(self, ctx: PolicyContext) -> str:
        if not hasattr(self, "estimator_"):
            raise NotFittedError(f"{self!r} is not fitted; call fit(bundle) first")
        if self._probing:
            return self._probe_choice(ctx.oldest_slack_ms)
        slacks = ctx.window_slacks_ms()
        m = min(len(slacks), self.lookahead)
        slacks = np.asarray(slacks[:m], dtype=np.float64)  # the rule's float64 array is sliced, not copied
        machine = math.exp(-self.estimator_.log_global)        # slacks at the profiles' scale
        servers = max(ctx.servers, 1)
        finish = self._continuation_latency(servers, m) if self.continuation else self._round_latency(servers)
        # a candidate other than the one just served pays the learned switch first (zeros: none learned)
        extra = self._no_extra if self._extra is None else self._extra
        n_pad, spacing, arrival = 0, 0.0, self._pad_arrival
        if self.expected_arrivals:
            self._record_deadline(ctx.deadline_ms)
            learned = None
            if self._arrivals is not None:   # the recent gaps' law (planner.plan.arrivals), in ms from now
                self._arrivals.update(ctx.recent_arrivals_s)
                learned = self._arrivals.times(ctx.now_s)
            if learned is not None:
                n_pad, spacing, arrival = min(self.lookahead - m, EXPECTED_ARRIVALS), machine, learned
            elif ctx.recent_rate_rps > 0:
                # the arrivals while the window is served, one every 1/rate, each valued over the
                # recent deadline mix (MIX_LEVELS quantiles): finish - arrival <= deadline
                n_pad, spacing = min(self.lookahead - m, EXPECTED_ARRIVALS), 1000.0 / ctx.recent_rate_rps * machine
        # expected on-time correct answers of each candidate, over (quantile x position) in one compiled
        # pass; a head-batch member below c's cut-off is shed, not served, so it counts nothing for c
        best, value = self._best(finish, extra, slacks, machine, spacing, n_pad,
                                 self._pad_deadlines if n_pad else self._no_pad, arrival)
        if value <= 0.0:
            return self._ids[self._drain]   # nothing can make it: clear the queue as fast as possible
        return self._ids[best]  # ties: the first, i.e. the more accurate (table order)

    def _best(self, finish: np.ndarray, extra: np.ndarray, slacks: np.ndarray, machine: float, spacing: float,
              n_pad: int, pad_deadlines: np.ndarray, pad_arrival: np.ndarray) -> tuple[int, float]:
        """:func:`best_candidate` over this policy's front: one call site, so the warm call at fit passes
        the very argument types a decision passes (numba compiles one version per type signature)."""
        return best_candidate(finish, extra, self._cutoffs(), self._batch, slacks, machine, spacing, n_pad,
                              pad_deadlines, pad_arrival, self._acc, self._drain, self.continuation, self._skip_q)

    def front_ids(self) -> list[str]:
        """The configurations the policy can pick now (right after :meth:`fit`: its front at the profile's
        scale), so a live run loads exactly those."""
        return list(self._ids)

    def switch_factors(self) -> dict[str, float]:
        """The learned cost of serving each front candidate right after another one (1: none)."""
        return dict(zip(self._ids, np.maximum(self.switch_.scales(self._ids), 1.0).tolist()))

    def _refresh_switch_extra(self) -> None:
        """``_extra``: the (C, Q) time a switch adds to each candidate's head batch (0 for the
        configuration just served), or None while no learned factor exceeds :data:`SWITCH_MIN_FACTOR`.
        Recomputed only when it can change (a switch was observed, the front was rebuilt): the
        bookkeeping of a switch is paid once per switch, not once per decision."""
        self._extra = None
        if not self.switch_aware or self._last_config is None or self.switch_.n_observed == 0:
            return
        factors = self.switch_.scales(self._ids)
        if factors.max() < SWITCH_MIN_FACTOR:
            return
        extra = (np.maximum(factors, 1.0) - 1.0)[:, None] * self._q   # at the scale the finish times use
        current = self._front_index.get(self._last_config)
        if current is not None:
            extra[current] = 0.0
        self._extra = np.ascontiguousarray(extra, dtype=np.float32)

    def __repr__(self) -> str:
        fitted = f", {len(self._all_ids)} candidates" if hasattr(self, "table_") else ", not fitted"
        return f"AnytimePolicy({self.task}{fitted})"


def anytime(bundle: ProfileBundle, task: str, **params) -> AnytimePolicy:
    """``AnytimePolicy(task, **params).fit(bundle)``."""
    return AnytimePolicy(task, **params).fit(bundle)
