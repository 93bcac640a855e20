"""The profiling sweep: every feasible configuration's latency and accuracy, resumable.

Order of work per (task, runtime, precision, device) group: load each model's predictor once; for
each model compute its per-example predictions once (largest batch size, shared across its batch
sizes; batch-1 vs batch-max agreement is measured on a sample), then time every batch size; then
each cascade of the group: its per-example outcome is composed from the members' predictions
(checked against the real :class:`planner.models.cascade.Cascade` on a sample) and its latency is timed by
running the real cascade on real batches. Finished work is stored at once (see
:mod:`planner.profile.store`), so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import fnmatch
import gc
import socket
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from planner import config
from planner.cluster import once_per_host
from planner.models.base import ModelUnavailableError, UnsupportedVariantError, VariantSpec
from planner.paths import cpu_model, machine_tag, results_dir
from planner.profile import accuracy as acc
from planner.profile.drift import DriftCheck, ProfileDriftError
from planner.profile.fingerprint import fingerprint, hardware_differences, now_iso, set_threads
from planner.profile.latency import StoppingRule, make_batches, summarize, time_predict
from planner.profile.reference import ReferenceTimingError, pick_reference, startup_scale
from planner.profile.roofline import measure_peaks, peak_by_precision
from planner.models.base import PRECISIONS
from planner.profile.space import Configuration, Zoo, available_devices, enumerate_space, infeasible_frame, load_zoo
from planner.profile.store import ProfileStore

if TYPE_CHECKING:
    from distributed import Client

LOAD_ERRORS = (UnsupportedVariantError, ModelUnavailableError)
# above this share of CPU time used by other processes a configuration's timing is flagged as disturbed
NOISY_SHARE = 0.05


def load_profile_preset(preset: str, device: str = "cpu") -> config.ProfilePreset:
    """The preset's profiler settings; on cuda its ``profile_cuda`` section where it has one."""
    settings = config.preset(preset)
    return settings.profile_cuda if device == "cuda" and settings.profile_cuda is not None else settings.profile


def profile_dir(preset: str, device: str) -> Path:
    return results_dir(preset) / "profiles" / machine_tag(device)


def _ort_threads(predictor: Any) -> float:
    """intra_op_num_threads of an ONNX Runtime predictor's session (NaN when not ORT or unknown)."""
    for name in ("session", "_session", "sess"):
        session = getattr(predictor, name, None)
        if session is not None and hasattr(session, "get_session_options"):
            return float(session.get_session_options().intra_op_num_threads)
    return float("nan")


def models_used(rows: pd.DataFrame) -> dict[str, set[str]]:
    """config_id -> the models it runs (its model, or a cascade's two stages), from the rows' own columns."""
    used: dict[str, set[str]] = defaultdict(set)
    for column in ("model", "cascade_small", "cascade_large"):
        for cid, name in zip(rows["config_id"], rows[column]):
            if isinstance(name, str) and not name.startswith("cascade:"):
                used[cid].add(name)
    return used


class _Sweep:
    def __init__(self, tasks: list[str], preset: str, device: str, zoo: Zoo, profile: config.ProfilePreset,
                 progress: bool, remeasure_noisy: float | None = None, remeasure: str | None = None,
                 reprofile: str | None = None, rescale: bool = False):
        self.tasks, self.preset, self.device, self.zoo, self.profile = tasks, preset, device, zoo, profile
        self.progress = progress
        self.remeasure_noisy = remeasure_noisy
        self.remeasure = remeasure
        self.reprofile = reprofile
        self.rescale = rescale
        self.timing_scale = 1.0  # what new samples are divided by (--rescale past the drift band)
        self.rule = StoppingRule.from_preset(profile)
        self.store = ProfileStore(profile_dir(preset, device))
        self.sync: Callable[[], None] | None = None
        if device == "cuda":
            import torch

            self.sync = torch.cuda.synchronize
        self.batch_sizes = sorted(int(b) for b in profile.batch_sizes)
        self.prediction_batch = self.batch_sizes[-1]
        self.infeasible_now: set[str] = set()  # config_ids found infeasible while running

    # ---- setup --------------------------------------------------------------------------------
    def _environment(self, n_threads: int) -> None:
        env = fingerprint(self.device)
        previous = self.store.environment() if self.store.path("environment").exists() else {}
        self.previous_env = previous
        # timings from other hardware: the folder is read, never written (see _refuse_foreign_work)
        self.foreign = hardware_differences(previous, env) if len(self.store.latency_rows()) else []
        if self.foreign:
            self.env = previous
            return
        env.update({
            "preset": self.preset, "n_threads": n_threads, "profile_settings": self.profile.model_dump(),
            "stopping_rule": "bootstrap percentile CI of p95 (scipy.stats.bootstrap); stop when half-width "
                             "<= ci_rel_halfwidth x p95, checked every check_every passes from min_passes; "
                             "else max_passes or max_seconds_per_config",
            "prediction_sharing": f"per-example predictions computed once per variant at batch "
                                  f"{self.prediction_batch} and shared across its batch sizes when batch "
                                  f"{self.batch_sizes[0]} agrees on a sample of {self.profile.agreement_sample} "
                                  f"(batch_agreement = 1); otherwise computed at every batch size",
            "runs": [*previous.get("runs", []), now_iso()],
        })
        if "date" in previous:
            env["first_date"] = previous.get("first_date", previous["date"])
        self.env = env
        self.store.write_environment(env)

    def _refuse_foreign_work(self, space: Any) -> None:
        """A folder timed on other hardware is left as it is when it has nothing to do (so that
        ``make report`` on another host reuses a committed profile, which the planner scales to the host
        at start-up), and is refused when it has work to do: resuming it would splice two machines'
        latencies into one profile."""
        options = [n for n in ("remeasure_noisy", "remeasure", "reprofile") if getattr(self, n) is not None]
        work = [f"options {', '.join(options)}"] if options else []
        for record, key_of in (("weights", self._weights_key), ("quantization", getattr(self.zoo, "quantization_key", None))):
            changed = sorted(self._changed_models(record, key_of)) if key_of is not None else []
            if changed:
                work.append(f"changed {record} of {', '.join(changed)}")
        lat_done, acc_done = self.store.latency_done(), self.store.accuracy_done()
        todo = [c.config_id for c in space.feasible if c.config_id not in lat_done or c.config_id not in acc_done]
        if todo:
            work.append(f"{len(todo)} configuration(s) not profiled (e.g. {todo[0]})")
        if work:
            raise ValueError(
                f"{self.store.root} holds timings measured on other hardware ({'; '.join(self.foreign)}) and "
                f"has work to do ({'; '.join(work)}): resuming here would splice two machines' latencies into "
                "one profile. Profile into another results folder (PLANNER_RESULTS_DIR=...) or move this one away")
        print(f"{self.store.root}: complete, timed on other hardware ({'; '.join(self.foreign)}); "
              "used as it is (the planner scales it to this machine at start-up)")

    def _peaks(self, phase: str) -> None:
        """Matmul peaks at the start of the sweep and again at its end; the best reading per precision
        is the peak (a transient load during one reading cannot lower it)."""
        peaks = self.store.peaks()
        if peaks is not None and not (peaks["device"] == self.device).all():
            raise ValueError(f"{self.store.path('peaks')} holds peaks of another device")
        if peaks is None or phase not in set(peaks["phase"]):
            print(f"measuring {self.device} matmul peaks ({self.profile.roofline_seconds:g} s per kernel, {phase})...")
            new = measure_peaks(self.device, self.profile.roofline_seconds).assign(phase=phase)
            peaks = new if peaks is None else pd.concat([peaks, new], ignore_index=True)
            self.store.write_peaks(peaks)
        self.env["peaks_flops_per_s"] = peak_by_precision(peaks)
        self.store.write_environment(self.env)

    def _model_sizes(self) -> None:
        """FLOPs per example and the sizes that set the bytes moved, per model (``model_sizes.csv``),
        so the roofline reads the profile folder alone (no model source needed to draw it). A model
        counted before is not counted again unless a value is missing; a retrained model's row is
        dropped by :meth:`_forget_changed` and counted afresh."""
        have = self.store.model_sizes()
        footprint = getattr(self.zoo, "model_footprint", None)  # optional: a toy zoo may not size its models
        rows = []
        for task in self.tasks:
            for model in self.zoo.task_models(task, self.preset):
                old = have[(have["task"] == task) & (have["model"] == model)]
                if len(old) and old.iloc[0].notna().all():
                    continue
                row = {"task": task, "model": model, "flops_per_item": float("nan"), "weight_elements": float("nan"),
                       "activation_elements_per_item": float("nan")}
                try:
                    row["flops_per_item"] = float(self.zoo.flops_per_item(task, model))
                    if footprint is not None:
                        fp = footprint(task, model)
                        row["weight_elements"] = float(fp.weight_elements)
                        row["activation_elements_per_item"] = float(fp.activation_elements_per_item)
                except LOAD_ERRORS as exc:
                    print(f"flops and sizes of {task}/{model} unavailable: {exc}")
                rows.append(row)
        if not rows and self.store.path("model_sizes").exists():
            return  # every model counted already
        counted = {(r["task"], r["model"]) for r in rows}
        kept = have[np.array([(t, m) not in counted for t, m in zip(have["task"], have["model"])], dtype=bool)]
        self.store.write_model_sizes(pd.concat([kept, pd.DataFrame(rows, columns=list(kept.columns))],
                                               ignore_index=True))

    # ---- main loop ----------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        start = time.monotonic()
        n_threads = set_threads(self.profile.threads)
        self.n_threads = n_threads
        self._environment(n_threads)
        space = enumerate_space(self.tasks, self.batch_sizes, [self.device], self.zoo,
                                precisions=self.profile.precisions or PRECISIONS,
                                thresholds=self.profile.thresholds,
                                cascade_precisions=self.profile.cascade_precisions,
                                cascade_runtimes=self.profile.cascade_runtimes,
                                profile_runtimes=self.profile.runtimes, preset=self.preset,
                                skip_emulated=self.profile.skip_emulated)
        if self.foreign:
            self._refuse_foreign_work(space)
            return pd.read_csv(self.store.path("profiles"))
        self._peaks("start")
        # a run over some tasks leaves the other tasks' rows alone (infeasible list and merged files)
        others = self.store.infeasible_rows() if self.store.path("infeasible").exists() else space.infeasible.iloc[:0]
        others = others[~others["task"].isin(self.tasks)]
        self.store.write_infeasible(pd.concat([others, space.infeasible], ignore_index=True) if len(others)
                                    else space.infeasible)
        self.by_variant: dict[str, list[Configuration]] = defaultdict(list)
        for c in space.feasible:
            self.by_variant[c.variant_key].append(c)
        if self.remeasure_noisy is not None:
            rows = self.store.latency_rows()
            noisy = set(rows.loc[rows["background_cpu_share"].isna() |
                                 (rows["background_cpu_share"] > self.remeasure_noisy), "config_id"])
            print(f"re-measuring {len(noisy)} configuration(s) timed under other load (> {self.remeasure_noisy:g})")
            self.store.forget_latency(noisy)
        if self.remeasure is not None:
            chosen = self._measured_matching(self.remeasure)
            print(f"re-measuring the latency of {len(chosen)} configuration(s) matching {self.remeasure!r}")
            self.store.forget_latency(chosen)
        if self.reprofile is not None:
            chosen = self._measured_matching(self.reprofile)
            print(f"profiling again (latency and accuracy) {len(chosen)} configuration(s) matching {self.reprofile!r}")
            self.store.forget_latency(chosen)
            self.store.forget_accuracy(chosen)
        self._forget_retrained()
        self._forget_requantized()
        self._model_sizes()
        self.lat_done, self.acc_done = self.store.latency_done(), self.store.accuracy_done()
        done = sum(c.config_id in self.lat_done and c.config_id in self.acc_done for c in space.feasible)
        print(f"{self.store.root}: {len(space.feasible)} configurations ({done} already done), "
              f"{len(space.infeasible)} infeasible recorded")
        self.timing_scale = self._check_drift(space.feasible)
        self.bar = tqdm(total=len(space.feasible), initial=done, unit="config", disable=not self.progress,
                        desc=f"profile {self.device}", dynamic_ncols=True)
        try:
            groups: dict[tuple, list[Configuration]] = defaultdict(list)
            for c in space.feasible:
                groups[c.group].append(c)
            for task in self.tasks:
                todo = {k: v for k, v in groups.items() if k[0] == task and not self._all_done(v)}
                if not todo:
                    continue
                self.inputs, self.labels = self.zoo.eval_inputs(task, n=self.profile.eval_subset)
                self.sample = acc.sample_index(len(self.labels), self.profile.agreement_sample)
                self.batches = {b: make_batches(self.inputs, b) for b in self.batch_sizes}
                for key, configs in todo.items():
                    self._group(configs)
        finally:
            self.bar.close()
        self._peaks("end")
        keep = {c.config_id for cs in self.by_variant.values() for c in cs} - self.infeasible_now
        measured = pd.concat([self.store.latency_rows()["config_id"], self.store.accuracy_rows()["config_id"]])
        keep |= {c for c in measured if c.split("/", 1)[0] not in self.tasks}  # other tasks: untouched
        merged = self.store.finalize(keep=keep)
        report(merged, time.monotonic() - start)
        dominated = pd.read_csv(self.store.path("dominated"))
        if len(dominated):
            print(f"{len(dominated)} measured configuration(s) dominated by another one (same task, batch, device) "
                  f"moved to {self.store.path('dominated').name}: " + ", ".join(sorted(set(dominated["runtime"]))))
        return merged

    def _forget_retrained(self) -> None:
        """Profile again every configuration of a model whose weights changed since it was profiled.

        Why: done-markers are per configuration id, which names the model but not its weights, so a
        retrained (or newly installed) checkpoint would otherwise keep the old checkpoint's accuracy and
        latency. The identity of each model's weights (``zoo.weights_key``: the checkpoint's sha256) is
        recorded in ``environment.json``; a folder from before this record counts as changed."""
        if self._weights_key is not None:
            self._forget_changed("weights", self._weights_key, what="weights", int8_only=False)

    @property
    def _weights_key(self) -> Callable[[str, str], str | None] | None:
        weights_key = getattr(self.zoo, "weights_key", None)
        return None if weights_key is None else (lambda task, model: weights_key(task, model, self.preset))

    def _forget_requantized(self) -> None:
        """Profile again the int8 configurations of a model whose quantization settings changed.

        Why: the int8 variant is built from the same weights with the model's export parameters
        (``zoo.quantization_key``: per-channel, layers kept fp32, calibration), which the weights'
        identity does not cover. Recorded in ``environment.json``; a folder from before this record
        counts as changed."""
        quantization_key = getattr(self.zoo, "quantization_key", None)
        if quantization_key is not None:
            self._forget_changed("quantization", quantization_key, what="int8 settings", int8_only=True)

    def _forget_changed(self, record: str, key_of: Callable[[str, str], str | None], *, what: str,
                        int8_only: bool) -> None:
        """Forget the measured configurations whose models' ``key_of(task, model)`` differs from the one
        recorded under ``environment.json[record]``, then record the current keys. A ``None`` key means
        "nothing to compare" (e.g. no checkpoint installed) and forgets nothing."""
        recorded = dict(self.previous_env.get(record, {}))
        current = self._current_keys(key_of)
        changed = self._changed_models(record, key_of)
        used = models_used(pd.concat([self.store.latency_rows(), self.store.accuracy_rows()], ignore_index=True))
        stale = {cid for cid, models in used.items() if models & changed and (not int8_only or "/int8/" in cid)}
        if stale:
            kind = "int8 configuration(s)" if int8_only else "configuration(s)"
            print(f"the {what} of {', '.join(sorted({m for cid in stale for m in used[cid] & changed}))} "
                  f"differ from the ones profiled: profiling their {len(stale)} {kind} again")
            self.store.forget_latency(stale)
            self.store.forget_accuracy(stale)
        if not int8_only and changed:  # a new architecture has new FLOPs and sizes
            sizes = self.store.model_sizes()
            if sizes["model"].isin(changed).any():
                self.store.write_model_sizes(sizes[~sizes["model"].isin(changed)])
        self.env[record] = {**recorded, **current}
        self.store.write_environment(self.env)

    def _current_keys(self, key_of: Callable[[str, str], str | None]) -> dict[str, str]:
        current = {model: key_of(task, model)
                   for task in self.tasks for model in self.zoo.task_models(task, self.preset)}
        return {model: key for model, key in current.items() if key is not None}

    def _changed_models(self, record: str, key_of: Callable[[str, str], str | None]) -> set[str]:
        """Models whose ``key_of`` differs from the one recorded under ``environment.json[record]``."""
        recorded = dict(self.previous_env.get(record, {}))
        return {model for model, key in self._current_keys(key_of).items() if recorded.get(model) != key}

    def _check_drift(self, feasible: list[Configuration]) -> float:
        """The factor new timings are divided by: 1.0 unless ``--rescale`` and this machine runs outside the
        folder's drift band, where without ``--rescale`` it raises :class:`ProfileDriftError`
        (:mod:`planner.profile.drift`). No check when nothing is to be timed, the folder holds no timing
        to compare with, or the preset sets no ``drift_tolerance``."""
        tolerance = self.profile.drift_tolerance
        by_id = {c.config_id: c for c in feasible}
        todo = [cid for cid in by_id if cid not in self.lat_done]
        stored = self.store.latency_rows()
        stored = stored[stored["config_id"].isin(self.lat_done & by_id.keys())]
        if tolerance is None or not todo or stored.empty:
            return 1.0
        try:
            reference = pick_reference(stored, stored["config_id"], self.profile.drift_reference)
        except ReferenceTimingError as exc:
            print(f"no drift check: {exc}")
            return 1.0
        print(f"drift check: re-timing {len(reference)} stored configuration(s) before timing {len(todo)} new ones")
        inputs = {task: self.zoo.eval_inputs(task, n=self.profile.eval_subset)[0]
                  for task in {by_id[cid].task for cid in reference}}
        timings = {cid: self._retime(by_id[cid], inputs[by_id[cid].task]) for cid in reference}
        check = DriftCheck(startup_scale(stored, timings), float(tolerance), len(todo))
        action = "within" if check.within else "rescaled" if self.rescale else "refused"
        self.env["drift_checks"] = [*self.env.get("drift_checks", []), check.record(action, now_iso())]
        self.store.write_environment(self.env)
        if action == "refused":
            raise ProfileDriftError(check.refusal(self.store.root))
        print(f"drift check: this machine takes {check.scale:.3f}x the time of the folder's stored timings "
              + ("(within the band)" if action == "within" else f"; new timings divided by {check.scale:.3f} (--rescale)"))
        return check.scale if action == "rescaled" else 1.0

    def _retime(self, c: Configuration, inputs: Any) -> np.ndarray:
        """Service times (ms) of a stored configuration timed again as the sweep times (same rule, real inputs)."""
        predictor = self.zoo.load_predictor(c.variant(), preset=self.preset)
        m = time_predict(predictor.predict, make_batches(inputs, c.batch_size), c.batch_size, self.profile.warmup,
                         self.rule, self.sync)
        del predictor
        gc.collect()
        return m.samples_ms

    def _measured_matching(self, pattern: str) -> set[str]:
        """Config ids with a latency or accuracy row whose id matches the glob ``pattern``."""
        ids = set(self.store.latency_rows()["config_id"]) | set(self.store.accuracy_rows()["config_id"])
        return {c for c in ids if fnmatch.fnmatchcase(c, pattern)}

    def _all_done(self, configs: list[Configuration]) -> bool:
        return all(c.config_id in self.lat_done and c.config_id in self.acc_done for c in configs)

    def _group(self, configs: list[Configuration]) -> None:
        self.predictors: dict[str, Any] = {}
        self.failures: dict[str, str] = {}
        singles: dict[str, list[Configuration]] = defaultdict(list)
        cascades: dict[tuple, list[Configuration]] = defaultdict(list)
        for c in configs:
            (cascades[c.cascade] if c.is_cascade else singles[c.model]).append(c)
        for model, cs in singles.items():
            if self._all_done(cs):
                continue
            predictor = self._predictor(cs[0].variant())
            if predictor is None:
                self._infeasible(cs, self.failures[model])
                continue
            if not self._accuracy_single(cs[0], predictor):
                continue
            for c in cs:
                self._latency(c, predictor.predict, _ort_threads(predictor))
        for cascade, cs in cascades.items():
            if self._all_done(cs):
                continue
            small, large = (self._predictor(v) for v in cs[0].members)
            if small is None or large is None:
                why = "; ".join(f"cascade member {m}: {self.failures[m]}" for m in cascade[:2] if m in self.failures)
                self._infeasible(cs, why)
                continue
            from planner.models.cascade import Cascade

            model = Cascade(small, large, cascade[2])
            self._accuracy_cascade(cs[0], small, large, model)
            for c in cs:
                self._latency(c, model.predict, _ort_threads(small))
        self.predictors.clear()
        gc.collect()

    def _predictor(self, spec: VariantSpec) -> Any | None:
        if spec.model in self.failures:
            return None
        if spec.model not in self.predictors:
            try:
                self.predictors[spec.model] = self.zoo.load_predictor(spec, preset=self.preset)
            except LOAD_ERRORS as exc:
                self.failures[spec.model] = f"{type(exc).__name__}: {exc}"
                print(f"cannot build {spec.describe()}: {exc}")
                return None
        return self.predictors[spec.model]

    def _infeasible(self, configs: list[Configuration], reason: str) -> None:
        self.store.add_infeasible(infeasible_frame([(c, reason) for c in configs]))
        self.infeasible_now |= {c.config_id for c in configs}
        self.bar.total -= len(configs)
        self.bar.refresh()

    # ---- accuracy -----------------------------------------------------------------------------
    def _row(self, c: Configuration, *values: dict[str, Any]) -> dict[str, Any]:
        """An accuracy_profiles row: identity, defaults for the optional columns, then ``values``."""
        row = {**c.identity(), "prediction_batch_size": self.prediction_batch, "accuracy_delta_vs_fp32": np.nan,
               "batch_agreement": np.nan, "batch_max_abs_diff": np.nan, "agreement_n": np.nan,
               "cascade_check_agreement": np.nan, "coverage": np.nan}
        for v in values:
            row.update(v)
        return row

    def _variant_rows(self, c: Configuration, values: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._row(member, values) for member in self.by_variant[c.variant_key]]

    def _unavailable(self, c: Configuration) -> None:
        self.store.add_accuracy(self._variant_rows(c, {"accuracy": np.nan, "calibration_accuracy": np.nan,
                                                       "accuracy_source": "unavailable",
                                                       "n_eval": 0, "prediction_key": None}), {})

    def _measured(self, c: Configuration, frame: pd.DataFrame, key: str, batch: int) -> dict[str, Any]:
        """Scored and calibration accuracy (planner.splits) and, for a cascade, its coverage."""
        s = acc.summary(frame, c.task)
        return {"accuracy": s["accuracy"], "calibration_accuracy": s["calibration_accuracy"],
                "accuracy_source": "measured", "n_eval": s["n_eval"], "prediction_key": key,
                "prediction_batch_size": batch, **({"coverage": s["coverage"]} if c.cascade else {})}

    def _accuracy_single(self, c: Configuration, predictor: Any) -> bool:
        """Predictions once per variant; per batch size only where batch-1 and batch-max disagree.

        False when the variant answers NaN or inf: its configurations (and the cascades built on it)
        are recorded infeasible with the reason, and the sweep goes on with the rest of the space."""
        configs = self.by_variant[c.variant_key]
        if all(m.config_id in self.acc_done for m in configs):
            return True
        if not predictor.accuracy_available:
            self._unavailable(c)
            return True
        self.bar.set_postfix_str(f"accuracy {c.variant_key}", refresh=False)
        try:
            self._score_variant(c, predictor, configs)
        except acc.NonFiniteOutputs as exc:  # a failure like a load failure: cascades on it skip too
            self.failures[c.model] = f"{type(exc).__name__}: {exc}"
            print(f"{c.variant_key}: {exc}; its configurations are recorded infeasible")
            self.store.forget_latency({m.config_id for m in configs})
            self._infeasible(configs, self.failures[c.model])
            return False
        return True

    def _score_variant(self, c: Configuration, predictor: Any, configs: list[Configuration]) -> None:
        """Store the variant's accuracy rows and prediction parts (nothing is stored if scoring fails)."""
        frame = acc.prediction_frame(predictor.predict(self.inputs, self.prediction_batch), self.labels)
        agreement = (acc.batch_agreement(predictor, self.inputs, self.sample,
                                         (self.batch_sizes[0], self.prediction_batch))
                     if len(self.batch_sizes) > 1 else {})
        shared = agreement.get("batch_agreement", 1.0) == 1.0
        rows, parts = [], {}
        for m in configs:
            if shared or m.batch_size == self.prediction_batch:
                key, batch = c.variant_key, self.prediction_batch
                parts[key] = frame
            else:  # batch-dependent numerics (e.g. dynamic int8 activation scales): evaluate at this batch
                key, batch = f"{c.variant_key}@b{m.batch_size}", m.batch_size
                parts[key] = acc.prediction_frame(predictor.predict(self.inputs, batch), self.labels)
            rows.append(self._row(m, agreement, self._measured(m, parts[key], key, batch)))
        self.store.add_accuracy(rows, parts)

    def _accuracy_cascade(self, c: Configuration, small: Any, large: Any, model: Any) -> None:
        """Compose from the members' stored predictions; check against the real cascade on a sample."""
        configs = self.by_variant[c.variant_key]
        if all(m.config_id in self.acc_done for m in configs):
            return
        if not (small.accuracy_available and large.accuracy_available):
            return self._unavailable(c)
        self.bar.set_postfix_str(f"accuracy {c.variant_key}", refresh=False)
        keys = dict(zip(*self.store.accuracy_rows()[["config_id", "prediction_key"]].to_numpy().T))
        groups: dict[tuple[str, str], list[Configuration]] = defaultdict(list)
        for m in configs:
            groups[tuple(keys[self._member(m, name).config_id] for name in c.cascade[:2])].append(m)
        rows, parts = [], {}
        for (small_key, large_key), members in groups.items():
            shared = "@b" not in small_key and "@b" not in large_key
            key = c.variant_key if shared else f"{c.variant_key}@b{members[0].batch_size}"
            batch = self.prediction_batch if shared else members[0].batch_size
            frame = acc.compose_cascade(self.store.prediction_part(small_key), self.store.prediction_part(large_key),
                                        c.cascade[2])
            parts[key] = frame
            check = acc.cascade_check(model, self.inputs, self.sample, batch, frame)
            values = {**self._measured(c, frame, key, batch), "cascade_check_agreement": check}
            rows += [self._row(m, values) for m in members]
        self.store.add_accuracy(rows, parts)

    @staticmethod
    def _member(c: Configuration, model: str) -> Configuration:
        return Configuration(c.task, model, c.runtime, c.precision, c.batch_size, c.device)

    # ---- latency ------------------------------------------------------------------------------
    def _latency(self, c: Configuration, predict: Callable[[Any, int], Any], ort_threads: float) -> None:
        if c.config_id not in self.lat_done:
            self.bar.set_postfix_str(c.config_id, refresh=False)
            m = time_predict(predict, self.batches[c.batch_size], c.batch_size, self.profile.warmup, self.rule,
                             self.sync)
            import torch

            samples, scale = m.samples_ms / self.timing_scale, self.timing_scale
            row = {**c.identity(), **summarize(samples, c.batch_size, (m.ci_low / scale, m.ci_high / scale)),
                   "stop_reason": m.stop_reason, "n_warmup": self.profile.warmup, "n_threads": self.n_threads,
                   "ort_intra_op_threads": ort_threads, "wall_s": m.wall_s,
                   "background_cpu_share": m.background_cpu_share, "machine_tag": self.store.root.name,
                   "cpu_model": cpu_model(), "torch_version": torch.__version__, "profiled_at": now_iso(),
                   "timing_scale": scale}
            self.store.add_latency(row, samples)
        self.bar.update(1)


def report(profiles: pd.DataFrame, wall_s: float, noisy_share: float = NOISY_SHARE) -> None:
    """Print the numbers the issue asks for: configurations, wall time, p95 CI half-widths."""
    hw = profiles["ci_rel_halfwidth"]
    q = hw.quantile([0.0, 0.5, 0.9, 1.0])
    print(f"{len(profiles)} configurations profiled; this run took {wall_s:.0f} s")
    print("p95 CI relative half-width: min {:.2%}, median {:.2%}, p90 {:.2%}, max {:.2%}".format(*q))
    print("stop reasons:", profiles["stop_reason"].value_counts().to_dict())
    noisy = profiles["background_cpu_share"] > noisy_share
    if noisy.any():
        print(f"warning: {int(noisy.sum())} configuration(s) were timed while other processes used more than "
              f"{noisy_share:.0%} of the CPU (column background_cpu_share); rerun with --remeasure-noisy "
              f"{noisy_share:g} on a quiet machine")


def run_sweep(tasks: list[str], preset: str, devices: list[str] | None = None, zoo: Zoo | None = None,
              profile: config.ProfilePreset | None = None, progress: bool = True,
              remeasure_noisy: float | None = None, remeasure: str | None = None,
              reprofile: str | None = None, rescale: bool = False) -> dict[str, pd.DataFrame]:
    """Profile ``tasks`` on each device (default: cpu, plus cuda when available); returns profiles per device.

    ``remeasure_noisy``: re-time configurations whose background_cpu_share exceeded it (or is unknown).
    ``remeasure``: re-time configurations whose config_id matches this glob (e.g. after a change to the
    serving path); their accuracy and predictions are kept. ``reprofile``: the same, but latency and
    accuracy both (e.g. after a model file changed). ``rescale``: where the drift check finds this machine
    outside the folder's band (:mod:`planner.profile.drift`), divide the new timings by the factor instead
    of stopping. ``profile`` None: the preset's settings per device
    (its ``profile_cuda`` section on cuda, see :func:`load_profile_preset`).
    """
    zoo = zoo or load_zoo()
    out = {}
    for device in devices or available_devices():
        out[device] = _Sweep(list(tasks), preset, device, zoo, profile or load_profile_preset(preset, device),
                             progress, remeasure_noisy, remeasure, reprofile, rescale).run()
    return out


def sweep_this_machine(tasks: list[str], preset: str, devices: list[str] | None = None,
                       profile: config.ProfilePreset | None = None, remeasure_noisy: float | None = None,
                       remeasure: str | None = None, reprofile: str | None = None,
                       rescale: bool = False) -> list[dict[str, Any]]:
    """:func:`run_sweep` on the machine this runs on (a Dask worker), into that machine's own folder.

    ``devices`` None means the devices this machine offers (a GPU machine profiles cuda too). No
    progress bar (it would land in the worker's log). Returns one small record per device (host,
    machine tag, folder, configurations), since the tables themselves stay on this machine's disk.
    """
    offered = available_devices()
    missing = [d for d in devices or [] if d not in offered]
    if missing:
        raise RuntimeError(f"{socket.gethostname()}: cannot profile {missing}, this machine offers {offered}")
    results = run_sweep(tasks, preset, devices, profile=profile, progress=False, remeasure_noisy=remeasure_noisy,
                        remeasure=remeasure, reprofile=reprofile, rescale=rescale)
    return [{"host": socket.gethostname(), "device": device, "machine_tag": machine_tag(device),
             "folder": str(profile_dir(preset, device)), "configurations": len(frame)}
            for device, frame in results.items()]


def sweep_per_machine(client: Client, tasks: list[str], preset: str, devices: list[str] | None = None,
                      profile: config.ProfilePreset | None = None, **options: Any) -> pd.DataFrame:
    """Profile on every machine of a Dask cluster, one sweep per machine, machines side by side.

    Exactly one worker per host runs :func:`sweep_this_machine` (see
    :func:`planner.cluster.once_per_host`): within a machine the configurations stay sequential and
    no second sweep competes for its cores, so its timings are as clean as a serial run's. Each
    machine writes ``results/<preset>/profiles/<its machine tag>/`` on its own disk. Returns one row
    per (machine, device): host (as the scheduler sees it), device, machine_tag, folder, configurations.
    """
    per_host = once_per_host(client, sweep_this_machine, list(tasks), preset, devices, profile, **options)
    rows = [{**record, "host": host} for host, records in per_host.items() for record in records]
    return pd.DataFrame(rows, columns=["host", "device", "machine_tag", "folder", "configurations"])
