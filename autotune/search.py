"""Search one problem with optuna: each trial proposes a config, which a sandbox process builds,
verifies and times against the study's anchor; the best few are then timed side by side with the
stored winner and BLAS, and a record changes only on a difference larger than the noise.

The objective is the candidate's time relative to the anchor, measured in interleaved rounds, so
a slow drift of the machine cancels; GF/s are reported beside it. Rounds race: a candidate that
is not among the leaders after two rounds (optuna's successive-halving pruner) is not timed
further, so a time budget compiles more candidates. A candidate that fails to build, raises, is
wrong, crashes its process or runs past the time limit fails its own trial with the reason in the
trial's user attributes; the study goes on.
"""
import collections
import dataclasses
import datetime
import itertools
import logging
import os
import statistics
import threading
import time
from dataclasses import dataclass

import numba
import numpy as np
import optuna
import tqdm

from autotune import build, load, machine, measure, ops, render, sandbox, space, store
from autotune import study as studies
from autotune.ops import KERNELS

SAMPLERS = {
    "tpe": lambda problem: optuna.samplers.TPESampler(multivariate=True, seed=None),
    "random": lambda problem: optuna.samplers.RandomSampler(),
    "grid": lambda problem: optuna.samplers.GridSampler({k: list(v) for k, v in space.choices(problem).items()}),
}
TRIAL_TIME_LIMIT_S = 120.0  # build + verify + time one candidate; past it the candidate is killed
MAX_ROUNDS = 6  # rounds of (anchor, candidate) for a leader; the racing rungs are at 2 and 6
MAX_PROPOSALS_PER_TRIAL = 50  # bounds the proposals (rejected ones, about 20 ms each, included)
SEEDS_AT_LEAST = 4  # seeded trials of a new study even when its budget is smaller than twice this
FINALISTS = 3  # best configs timed again side by side with the stored winner and BLAS
DISTURBED_SLOWDOWN = 1.5  # an anchor this much slower than usual: something else ran (drift is 10-30%)
DISTURBED_RETRIES, DISTURBED_PAUSE_S = 2, 5.0  # a disturbed trial is timed again after a pause, this often
FINAL_BUDGET_S = 20.0  # of the final comparison's rounds (at least measure.FINAL_MIN_ROUNDS)
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)


def racing_pruner():
    """Successive halving over rounds: after 2 rounds a candidate goes on only if it is in the best
    third of the candidates timed so far (or the best), likewise at 6."""
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)


# Set by `interrupt` (the command line's SIGINT/SIGTERM handler). An interrupt that lands inside
# numba's compiler can come back wrapped in an ordinary exception; the flag keeps it an interrupt.
INTERRUPTED = threading.Event()
_IN_OPTUNA = threading.Event()  # inside study.optimize: optuna may be writing the study


def interrupt(signum, frame):
    """Signal handler. Inside study.optimize an exception raised while optuna writes a trial's
    outcome breaks optuna's own bookkeeping, so there the signal raises only while the search waits
    on its candidate; elsewhere it is only noted, and the search stops at the next trial boundary."""
    INTERRUPTED.set()
    if sandbox.WAITING.is_set() or not _IN_OPTUNA.is_set():
        raise KeyboardInterrupt


def _stop_if_interrupted(study, trial):
    if INTERRUPTED.is_set():
        study.stop()


def warm_start(study, problem, directory, budget, nearest=3):
    """Seed a new study with what won before on this machine, at most half of its `budget` of
    trials (and at least SEEDS_AT_LEAST) so that the sampler has the rest: first this size's own
    winner (a new study of a tuned size means the templates or the search space changed since), the
    winners of the other kernels at the nearest llm.c shape, all of these with B's panel sliced once
    per tile (slice_b; records made before it index by offset), the first of these with B read in
    place (where it can be: N = NR), in the forward all of these starting their tiles from a bias
    slice, in the weight gradient the sliced ones with dbias's sums in registers, the first sliced
    one with the register block of every other NR (the analytical model's MR for it), those that
    pad N least first, and in the forward these blocks from a bias slice; then the
    winners of the `nearest` other tuned sizes of the same kernel (by log-distance of M, N, K), the
    finalists of this size's record, the analytical model's configs for every NR (A packed, A read
    in place, B read in place), and the first of them with one K block. Each is moved to the
    nearest valid choice. Records of a kin machine (this CPU and target, see store) count as this
    machine's; records from other machines say nothing about this one.

    Why the other kernels: the three share the micro-kernel and the task loop, and what suits this
    CPU carries over. On a Zen 4 the forward's and the input gradient's winners (12 x 32, K blocks of
    768, A read in place) led where the weight gradient's 16 trials never went: its search stored a
    config at 66-71% of the FMA peak where such configs ran 78-84% (README, "How a search spends
    its time"). Why every NR in the best layout: the model's own configs for three and four vectors
    (K blocks of 64 or 128 for a 32 KiB L1) ran at 0.6-0.9x the speed of the winners (K blocks of
    768) in the first studies of the 2026-11-30 re-tune: register blocks compared in a layout
    nobody would pick."""
    usable = [e for e in store.entries(directory) if e.status in ("ok", "kin", "stale")]
    earlier = sorted((e for e in usable if e.record.problem.kernel == problem.kernel),
                     key=lambda e: e.record.problem.distance(problem))
    same = [e for e in earlier if e.record.problem == problem]
    others = [e for e in earlier if e.record.problem != problem][:nearest]
    across = [e.record.config for e in _nearest_of_other_kernels(usable, problem)]
    model = [space.analytical_config(problem, vectors=v) for v in _vectors_by_fit(problem)]
    known = [e.record.config for e in same] + across
    sliced = [dataclasses.replace(c, slice_b=True) for c in known]
    in_place = [dataclasses.replace(c, pack_b=False) for c in known[:1]]  # dropped where NR does not divide N
    blocks = [_with_block(sliced[0], m) for m in model if m.nr != sliced[0].nr] if sliced else []
    model_seeds = [c for packed in model for c in (packed, dataclasses.replace(packed, pack_a=False),
                                                   dataclasses.replace(packed, pack_b=False))]
    summed = [dataclasses.replace(c, sums_in_registers=True) for c in sliced]  # moved back but in backward_weight
    blocked = [dataclasses.replace(c, pack_blocks=True) for c in known]  # moved back but in the forward
    seeds = [*known, *sliced, *in_place, *_from_bias_slice(known), *summed, *blocked, *blocks, *_from_bias_slice(blocks),
             *(e.record.config for e in others),
             *(f for e in same for f, _ in e.record.finalists),
             *model_seeds, dataclasses.replace(model[0], kc=problem.K)]  # the last one sums K in one block
    valid = [c for c in dict.fromkeys(space.nearest_choice(c, problem) for c in seeds)
             if space.invalid_reason(c, problem) is None]
    for config in valid[:max(SEEDS_AT_LEAST, budget // 2)]:
        study.enqueue_trial(config.params(), user_attrs={"seeded": True})


def _from_bias_slice(configs):
    """`configs` with their tiles starting from a bias slice: dropped (moved back) but in the forward."""
    return [dataclasses.replace(c, bias_slice=True) for c in configs]


def _with_block(config, model):
    """`config`'s layout with `model`'s register block: tasks of about the same rows and columns (moved
    to the problem's choices with the other seeds)."""
    return dataclasses.replace(
        config, mr=model.mr, nr=model.nr, row_tiles=max(1, round(config.mr * config.row_tiles / model.mr)),
        col_panels=max(1, round(config.nr * config.col_panels / model.nr)))


def _vectors_by_fit(problem):
    """NR's vector counts, those whose panels pad the problem's N least first, then two, one, three,
    four. At N = 48 on AVX-512 a three-vector block has no padding where two vectors pad a quarter."""
    lanes = machine.target().lanes
    preferred = (2, *(v for v in space.VECTORS_PER_NR if v != 2))

    def padding(vectors):  # the share of the padded panels' columns past N
        padded = -(-problem.N // (vectors * lanes)) * vectors * lanes
        return (padded - problem.N) / padded

    return sorted(preferred, key=lambda v: (padding(v), preferred.index(v)))


def _nearest_of_other_kernels(entries, problem):
    """Per other kernel, its record whose llm.c shape, as a problem of `problem`'s kernel, is nearest."""
    kernel = KERNELS[problem.kernel]
    by_kernel = collections.defaultdict(list)
    for entry in entries:
        if entry.record.problem.kernel == problem.kernel:
            continue
        try:
            distance = kernel.problem(ops.Shape.parse(entry.record.shape)).distance(problem)
        except ValueError:  # a record searched without an llm.c shape
            continue
        by_kernel[entry.record.problem.kernel].append((distance, entry))
    return [min(pairs, key=lambda pair: pair[0])[1] for _, pairs in sorted(by_kernel.items())]


def suggest(trial, problem):
    """The trial's Config, or TrialPruned if it is invalid for this problem (before any compile)."""
    config = space.Config.from_dict(
        {name: trial.suggest_categorical(name, options) for name, options in space.choices(problem).items()})
    reason = space.invalid_reason(config, problem)
    if reason:
        trial.set_user_attr("rejected", reason)
        raise optuna.TrialPruned(reason)
    return config


class Objective:
    """The candidate's time relative to the study's anchor (median of per-round ratios; the study minimizes it).

    A trial whose anchor ran DISTURBED_SLOWDOWN times slower than usual is timed again after a
    pause: a load on one of the two cores slows the parallel anchor, not a 1-thread candidate. In
    a 60-trial study (8,128,192,192 forward, Zen 4) the anchor ran 2.5x its usual time in one trial,
    and a 1-thread kernel read 2.2x faster than it, twice its real speed, and led the study.

    A trial whose anchor ran slow in every timing, DISTURBED_RETRIES pauses apart, is scored: the
    load has stayed, so it is the machine's pace now, and the sandbox takes the anchor's time as its
    usual one (the "new_pace" attribute says so). Failing it instead failed every trial of a study
    whose machine stayed loaded: in CI, two searches of a pytest worker found nothing to store while
    the other worker ran (2026-12-01, anchors 1.6-1.9x in every timing). A search under such a load
    tunes for the loaded machine; the command line says so.
    """

    def __init__(self, problem, evaluator):
        self.problem, self.evaluator = problem, evaluator  # a sandbox.Sandbox

    def __call__(self, trial):
        trial.set_user_attr("pid", os.getpid())  # whose trial it is, if an interrupt strands it
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        config = suggest(trial, self.problem)
        other = _same_params(trial)
        if other is not None and other.state == optuna.trial.TrialState.RUNNING:
            trial.set_user_attr("rejected", f"trial {other.number} is evaluating this config")
            raise optuna.TrialPruned()  # another worker is timing it: do not time it twice
        if other is not None:  # categorical spaces repeat themselves: never build or time twice
            trial.set_user_attr("repeat_of", other.number)
            if other.state == optuna.trial.TrialState.FAIL:
                raise sandbox.CandidateFailed(other.user_attrs.get("failure", "failed before"))
            return other.value
        try:
            return self._evaluate(trial, config)
        except Exception as error:
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt from error
            trial.set_user_attr("failure", sandbox.describe(error))
            raise

    def _evaluate(self, trial, config):
        def keep_going(ratios):
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt
            trial.report(statistics.median(ratios), step=len(ratios))
            if len(ratios) < MAX_ROUNDS and not trial.should_prune():
                return True
            if len(ratios) < MAX_ROUNDS:
                trial.set_user_attr("raced_out", f"behind the leaders after {len(ratios)} rounds")
            return False

        def unraced(ratios):
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt
            return len(ratios) < MAX_ROUNDS

        if INTERRUPTED.is_set():  # noted while optuna proposed this trial
            raise KeyboardInterrupt
        source = render.render(KERNELS[self.problem.kernel], config)
        result = self.evaluator.evaluate(source, config, keep_going)
        for _ in range(DISTURBED_RETRIES):  # timed again in full, unraced: the trial's rungs are reported
            if result["anchor_slowdown"] <= DISTURBED_SLOWDOWN:
                break
            trial.set_user_attr("disturbed", f"the anchor ran {result['anchor_slowdown']:.2f}x its usual time: timed again")
            time.sleep(DISTURBED_PAUSE_S)
            result = self.evaluator.evaluate(source, config, unraced)
        if result["anchor_slowdown"] > DISTURBED_SLOWDOWN:
            trial.set_user_attr("new_pace", f"the anchor ran {result['anchor_slowdown']:.2f}x its usual time "
                                            f"in {DISTURBED_RETRIES + 1} timings: scored at the machine's new pace")
            self.evaluator.take_pace(result)
        trial.set_user_attr("compile_s", result["compile_s"])
        trial.set_user_attr("compiled", result["compiled"])
        trial.set_user_attr("rounds", len(result["ratios"]))
        trial.set_user_attr("gflops", round(self.problem.flops / statistics.median(result["seconds"]) / 1e9, 2))
        return statistics.median(result["ratios"])


def _progress(bar, problem):
    def update(study, trial):
        if trial.state in COUNTED:
            bar.update(1)
            best = _best_trial(study)
            failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
            bar.set_postfix_str((f"best {best.user_attrs.get('gflops', '?')} GF/s, " if best else "")
                                + f"{failed} failed")
    return update


def _best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _same_params(trial):
    """Another trial of the same config: a finished one (its result is reused) or one another
    worker is running now. Trials an interrupt stranded do not count.

    Running trials of any number count, not only earlier ones: each worker writes its params
    before it looks, so of two workers that drew the same config at once, the one that looks last
    sees the other (an earlier-numbered trial may still have been writing its params when a later
    one looked). Both may see each other and both step aside; the config is simply drawn again."""
    finished = [t for t in trial.study.get_trials(deepcopy=False, states=COUNTED)
                if not (t.state == optuna.trial.TrialState.FAIL and "failure" not in t.user_attrs)]
    running = [t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
               if t.number != trial.number]
    return next((t for t in finished + running if t.params == trial.params), None)


@dataclass(frozen=True)
class Outcome:
    """What a search (or a pull) did for one problem: the record it measured for its best config,
    whether that record is now the stored one, and why."""
    record: store.Record
    stored: bool
    decision: str


def search(kernel, shape, trials=30, timeout=None, sampler="tpe", storage=None, directory=None,
           progress=True, time_limit_s=TRIAL_TIME_LIMIT_S):
    """Tune `kernel` for `shape` until its study holds `trials` evaluated trials, then decide what
    tuned/ keeps (Outcome)."""
    optuna.logging.set_verbosity(logging.ERROR)  # failed trials: reasons in the study and the final table
    problem = kernel.problem(shape)
    directory = store.tuned_dir(directory)
    study = studies.open_study(problem, storage, SAMPLERS[sampler](problem), racing_pruner(), shape)
    if not study.trials:
        warm_start(study, problem, directory, trials)
    remaining = trials - len(study.get_trials(deepcopy=False, states=COUNTED))
    if remaining > 0:  # rejected configs cost no compile and do not count; stop at `trials` evaluated ones
        earlier = {t.number for t in study.trials}
        try:
            with (sandbox.Sandbox(kernel, problem, studies.anchor_of(study), time_limit_s) as evaluator,
                  tqdm.tqdm(total=remaining, desc=kernel.name, unit="trial", disable=not progress) as bar):
                _IN_OPTUNA.set()
                try:
                    _optimize(study, Objective(problem, evaluator), MAX_PROPOSALS_PER_TRIAL * remaining, timeout,
                              [optuna.study.MaxTrialsCallback(trials, states=COUNTED),
                               _progress(bar, problem), _stop_if_interrupted])
                finally:
                    _IN_OPTUNA.clear()
                if INTERRUPTED.is_set():  # noted at a trial boundary, where optuna stopped
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            _fail_interrupted(study, earlier)
            raise
    return finish(study, kernel, problem, directory)


def _optimize(study, objective, n_trials, timeout, callbacks):
    """study.optimize, resumed when another worker finished a trial this one was also running: on
    SQLite two workers can both take the same enqueued trial (optuna's row lock is a no-op there),
    and the second to finish raises "Cannot tell a COMPLETE trial". The trial has its value, so
    the search goes on; MaxTrialsCallback still stops it at the study's count."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            study.optimize(objective, n_trials=n_trials, timeout=left, catch=(Exception,),
                           gc_after_trial=False, callbacks=callbacks)
            return
        except ValueError as error:
            if not str(error).startswith("Cannot tell a COMPLETE trial"):
                raise


def pull(storage, directory=None):
    """Finish every study in `storage` made on this machine kind with the current templates (time its
    finalists here beside the stored winner and BLAS, store what wins); returns (outcomes, skipped names)."""
    optuna.logging.set_verbosity(logging.WARNING)
    current, skipped = studies.current_studies(storage)
    directory = store.tuned_dir(directory)
    outcomes = []
    for study in current:
        problem = studies.problem_of(study)
        outcomes.append(finish(study, KERNELS[problem.kernel], problem, directory))
    return outcomes, skipped


def finish(study, kernel, problem, directory):
    """Time the study's finalists side by side with the stored winner (if any) and BLAS; store the
    fastest finalist if no winner was stored, if it beats the winner beyond the noise, or if it ties
    a winner that runs a fallback and beats that fallback itself (_ahead_of_the_fallback)."""
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        reasons = {t.user_attrs.get("failure") or t.user_attrs.get("rejected")
                   for t in study.trials}
        raise RuntimeError(f"no candidate for {problem} passed verification and was timed: "
                           f"{sorted(filter(None, reasons))[:3]}")
    configs = finalists(study)
    incumbent = next((e for e in store.entries(directory) if e.status == "ok" and e.record.problem == problem), None)
    functions = {c.label(): (c.threads, build.build_kernel(kernel, c).function(kernel)) for c in configs}
    if incumbent is not None and incumbent.record.config not in configs:
        built = build.build(incumbent.source, incumbent.record.compile_flags)
        functions[incumbent.record.config.label()] = (incumbent.record.config.threads, built.function(kernel))
    timings = measure.side_by_side(kernel, problem, functions, FINAL_BUDGET_S, baselines=ops.fallbacks())
    best = min(configs, key=lambda c: timings[c.label()].median)

    def timed_again(config):  # a second comparison of one config beside the fallbacks
        return lambda: measure.side_by_side(kernel, problem, {config.label(): functions[config.label()]},
                                            FINAL_BUDGET_S, baselines=ops.fallbacks())

    replace, decision = _decision(best, incumbent, timings)
    decides_use = kernel.name not in ops.OPS["backward"]  # a backward half's use is the whole backward's to decide
    if not replace and decides_use:
        replace, decision = _ahead_of_the_fallback(best, incumbent, timings, decision, timed_again(best))
    record = _record(study, kernel, problem, best, configs, timings, incumbent, decision if replace else "")
    if not replace:  # _decision replaces whenever nothing was stored: here an incumbent exists
        if decides_use:
            decision += _revise_use(incumbent, timings, directory, timed_again(incumbent.record.config))
        return Outcome(record, False, decision)
    return Outcome(record, store.save(record, render.render(kernel, best), directory), decision)


def agree_backward(shape, directory=None):
    """Decide per op what each half of the backward at `shape` runs; a sentence saying what was
    timed and decided, or None while a half has no usable record here.

    Each half was searched alone, but the op runs them one after the other, and a kernel that beat
    BLAS by itself can lose beside a BLAS call (OpenBLAS's threads spin after it): at 4,64,48,48 a
    weight kernel 2.36x BLAS alone made the whole backward 0.70-0.94x of BLAS for both. So the whole
    backward is timed as the loader would run it, interleaved, beside every plan that swaps a half
    for BLAS (or for its kernel, where BLAS was stored); the records of the halves the fastest plan
    changes are revised to it. Fastest by the median of per-round ratios to the stored plan (the
    medians of the plans' own times, drift and all, once picked a plan that ran 0.84x the stored
    one round by round). No noise margin favours what is stored, but a plan that runs more kernels
    must be faster beyond the noise, as a kernel against BLAS in a final comparison (_use)."""
    directory = store.tuned_dir(directory)
    stored = _usable_records(directory)
    halves = [stored.get(KERNELS[name].problem(shape)) for name in ops.OPS["backward"]]
    if None in halves:
        return None
    if not _runnable_here(halves):
        return _NOT_RUNNABLE
    baselines = {"blas", *(e.record.use for e in halves)} - {"kernel"}  # the loader may run either half's
    runs = [stored_calls(e, baselines) for e in halves]
    return _agree(halves, runs, lambda plan: _loader_runs(plan, halves),
                  _as_loaded(tuple(e.record.use for e in halves), halves),
                  lambda plan: f"{plan[0]} for dinp + {plan[1]} for dweight", "the whole backward", directory)


def agree_step(shape, directory=None):
    """Decide what each of the three kernels at `shape` runs, timed as a training step runs them (the
    forward, then the backward); a sentence saying what was timed and decided, or None while a kernel
    has no usable record.

    Each kernel was searched alone, but a parallel kernel's OpenMP threads spin after it and take a
    core from a BLAS call that follows, and OpenBLAS's threads do the same to a kernel after BLAS:
    at 16,1024,48,48 on a Zen 3 (GOMP_SPINCOUNT=10000) a forward kernel at 1.01x BLAS alone, before
    a backward on BLAS, made the step 0.65-0.71x the best other (`bench --op step`, 4 runs), where
    BLAS for the forward made it 0.84-1.04x (3 runs). A kernel that loses to BLAS alone by a little
    may also win the step when it spares the other kernels' BLAS neighbours. So every plan the loader would run (each
    kernel's stored kernel, BLAS, or what its record runs; load.beside within the backward) is timed
    as a step, interleaved, and the records the fastest plan changes are revised, by the median of
    per-round ratios to the stored plan (as agree_backward)."""
    directory = store.tuned_dir(directory)
    stored = _usable_records(directory)
    entries = [stored.get(KERNELS[name].problem(shape)) for name in ops.OPS["all"]]  # forward, dinp, dweight
    if None in entries:
        return None
    if not _runnable_here(entries):
        return _NOT_RUNNABLE
    runs = [stored_calls(e, {"blas", e.record.use} - {"kernel"}) for e in entries]
    halves = entries[1:]
    current = (entries[0].record.use, *_as_loaded(tuple(e.record.use for e in halves), halves))
    return _agree(entries, runs, lambda plan: _loader_runs(plan[1:], halves), current,
                  lambda plan: f"{plan[0]} for the forward, then {plan[1]} for dinp + {plan[2]} for dweight",
                  "the step", directory)


def _agree(entries, runs, loadable, current, label, reason, directory):
    """Time every plan (a use per record of `entries`, called from `runs`) that `loadable` accepts,
    interleaved, against the stored plan `current`; revise each record the fastest plan changes
    ("<reason>: ..."): on a faster median, or, where it runs more kernels than `current`, only when
    faster beyond the noise (as _use); and only when a second timing of that plan and `current` agrees
    (as _revise_use). A sentence saying what was timed and decided (`label` names a plan)."""
    plans = {plan: [runs[i][use] for i, use in enumerate(plan)]
             for plan in itertools.product(*(list(r) for r in runs)) if loadable(plan)}
    contenders = {plan: lambda calls=calls: [call() for call in calls] for plan, calls in plans.items()}
    best, speedup = _fastest_against(contenders, current)
    if speedup.median <= 1:
        return (f"kept {label(current)}, the fastest of {len(plans)} plans; the next ({label(best)}) ran "
                f"{speedup.describe()} of its speed")
    if not _beats(best, current, speedup):
        return (f"kept {label(current)}: the fastest of {len(plans)} plans ({label(best)}) runs more kernels and "
                f"ran {speedup.describe()} of its speed, within the noise")
    _, again = _fastest_against({plan: contenders[plan] for plan in (best, current)}, current)
    if not _beats(best, current, again):  # a change must hold in a second timing (see _revise_use)
        return (f"kept {label(current)}: the fastest of {len(plans)} plans ({label(best)}) ran {speedup.describe()} "
                f"of its speed, then {again.describe()} in a second timing of the two")
    sentence = (f"{label(best)} ran {speedup.describe()} the speed of {label(current)}, the fastest of {len(plans)} "
                f"plans, and {again.describe()} in a second timing of the two")
    for entry, use in zip(entries, best):
        if use != entry.record.use:
            store.revise(dataclasses.replace(entry.record, use=use, revised=f"{reason}: {sentence}"), directory)
    return f"revised to {sentence}"


_NOT_RUNNABLE = "not timed: a record runs PyTorch, which is not installed here"


def _runnable_here(entries):
    """Whether every record's `use` runs in this process as stored (see ops.runnable)."""
    return all(ops.runnable(e.record.use) == e.record.use for e in entries)


def _more_kernels(plan, current):
    return plan.count("kernel") > current.count("kernel")


def _beats(plan, current, speedup):
    """Whether `plan`, timed at `speedup` against `current`, replaces it: on a faster median, or, where
    it runs more kernels, only faster beyond the noise (as _use)."""
    return speedup.median > 1 and (not _more_kernels(plan, current) or speedup.verdict() == "faster")


def _usable_records(directory):
    """{Problem: store entry} of the records in `directory` that this machine can run ("ok")."""
    return {e.record.problem: e for e in store.entries(directory) if e.status == "ok"}


def _fastest_against(contenders, current):
    """The plans `contenders` ({plan: call}) timed interleaved on every core, a pause after each:
    (the other plan with the largest median per-round speedup over `current`, that measure.Speedup)."""
    with measure.thread_count(numba.config.NUMBA_NUM_THREADS):
        timings = measure.compare(contenders, rounds=measure.FINAL_MIN_ROUNDS, settle_after=tuple(contenders),
                                  budget_s=FINAL_BUDGET_S)
    versus = {plan: measure.speedup(timings[plan], timings[current]) for plan in contenders if plan != current}
    best = max(versus, key=lambda plan: versus[plan].median)
    return best, versus[best]


def stored_calls(entry, baselines):
    """{use: call} for a stored record: its stored kernel source as "kernel" (whatever the record's
    `use`) and the kernel's `baselines` by name, on arrays of its size. The whole backward times its
    halves this way; docs/blas_warm.py and docs/backward_halves.py time records with it."""
    kernel, record = KERNELS[entry.record.problem.kernel], entry.record
    function = build.build(entry.source, record.compile_flags).function(kernel)
    return measure.calls(kernel, kernel.inputs(record.problem, seed=1), {"kernel": (record.config.threads, function)},
                         sorted(baselines))


def _loader_runs(plan, halves):
    """Whether the loader would run `plan` (uses per half) as it is (see _as_loaded)."""
    return _as_loaded(plan, halves) == plan


def _as_loaded(plan, halves):
    """The plan the loader runs for `plan`, by the loader's own rule (load.beside: a parallel kernel
    beside a baseline becomes that baseline)."""
    own = [load.Choice(None, "tuned", baseline=use) if use != "kernel" else load.Choice(e.record.config, "tuned")
           for e, use in zip(halves, plan)]
    flops = halves[0].record.problem.flops
    agreed = (load.beside(own[0], own[1], flops), load.beside(own[1], own[0], flops))
    return tuple(choice.baseline or "kernel" for choice in agreed)


def _revise_use(incumbent, timings, directory, again):
    """Whether the kept winner or BLAS runs, decided again by this final comparison (_use); the
    record is rewritten only if that changed, and only if a second comparison (`again()`: the
    kernel and the fallbacks timed anew) decides the same. Returns what changed, in words.

    One comparison's verdict moves with the hour: on a Zen 4 (2026-12-03) the headline forward's
    kernel read 1.019x BLAS with beta (interval 1.008-1.033) in the re-search's final comparison, so
    BLAS ran it, and 1.094x (1.051-1.497) in a search an hour later, which moved it to the kernel.
    A decision that two comparisons in a row agree on is the one a single lucky or disturbed
    comparison does not flip; the second costs time only where the use would change."""
    record = incumbent.record
    label = record.config.label()
    use, why = _use(timings[label], timings)
    if use == record.use:
        return ""
    confirmation = again()
    use_again, why_again = _use(confirmation[label], confirmation)
    if use_again != use:
        return (f"; the loader still runs {record.use} here: one final comparison said {use} ({why}), "
                f"a second, to confirm it, {use_again} ({why_again})")
    both = f"two final comparisons in a row: {why}; then {why_again}"
    store.revise(dataclasses.replace(record, use=use, revised=f"a later final comparison, {both}"), directory)
    return f"; the loader now runs {use} here ({both})"


def _ahead_of_the_fallback(best, incumbent, timings, decision, again):
    """(whether `best` replaces the stored winner after all, why). Where the stored winner is kept
    on a tie but runs a fallback (it did not beat it beyond the noise here), and `best` did, the
    user would get the fallback's speed though a kernel ahead of it was found: `best` is stored if a
    second comparison (`again()`: `best` and the fallbacks timed anew) agrees. On a Zen 4
    (2026-12-04) a search of the headline forward found the stored config with B sliced at 1.07x
    BLAS with beta and 1.022x the stored config (interval 0.977-1.384), which did not beat BLAS
    beyond the noise in that comparison, so the op stayed on BLAS."""
    kept = incumbent.record.config.label()
    versus = measure.speedup(timings[best.label()], timings[kept])
    if (best == incumbent.record.config or versus.verdict() != "within noise"
            or _use(timings[kept], timings)[0] == "kernel"):
        return False, decision
    use, why = _use(timings[best.label()], timings)
    if use != "kernel":
        return False, decision
    confirmation = again()
    use_again, why_again = _use(confirmation[best.label()], confirmation)
    if use_again != "kernel":
        return False, f"{decision}; it ran ahead of the fallback once ({why}), not in a second comparison ({why_again})"
    return True, (f"{versus.describe()} the stored winner's speed (a tie) and, unlike it, ahead of the fallback "
                  f"in two final comparisons in a row: {why}; then {why_again}")


def _use(timing, timings):
    """("kernel" or its _fallback, why) for a kernel's `timing` in a final comparison. The kernel
    runs only where it is faster than the fallback beyond the noise (Speedup.verdict): BLAS is what
    the user already has, and kernels stored on a tie lost to it later. On a Zen 3 (2026-12-02) the
    headline forward, stored at 1.01x BLAS (interval 0.98-1.01), read 0.90-0.96x the best other in
    three `bench` runs, and the 4,1024,768,2304 forward, stored at 1.00x, 0.74-1.02x. A margin the
    other way, for a stored kernel, kept one that read 0.96x, 0.67x and 0.90x BLAS in three
    comparisons (4,64,48,48 forward)."""
    fallback = _fallback(timings)
    versus = measure.speedup(timing, timings[fallback])
    use = "kernel" if versus.verdict() == "faster" else fallback
    return use, f"the kernel ran {versus.describe()} of {fallback}'s speed"


def _fallback(timings):
    """What the loader runs instead of a kernel: BLAS with beta (no temporaries), unless another of
    the fallbacks timed beside it (numpy on 2-D views; PyTorch, where installed) ran faster beyond
    the noise, then the fastest of those. numpy's bias pass reads `out` once more, and numpy picked
    by the median of one final comparison (the Zen 3 headline forward, 2026-12-02) read 0.88-0.98x
    BLAS with beta in three `bench` runs. PyTorch's CPU wheel calls MKL, which on an Intel Xeon
    (2026-12-02, three `bench` runs) ran 1-10% ahead of OpenBLAS at nearly every large size, and
    on AMD CPUs behind it."""
    over_blas = {name: measure.speedup(timings[name], timings["blas"])
                 for name in ops.FALLBACKS if name != "blas" and name in timings}
    faster = [name for name, speedup in over_blas.items() if speedup.verdict() == "faster"]
    return max(faster, key=lambda name: over_blas[name].median, default="blas")


def _decision(best, incumbent, timings):
    """(whether `best` replaces the stored winner, why), from their paired rounds."""
    if incumbent is None:
        return True, "no winner was stored for this size on this machine"
    if best == incumbent.record.config:
        return False, "the stored winner was found again"
    versus = measure.speedup(timings[best.label()], timings[incumbent.record.config.label()])
    if versus.verdict() == "faster":
        return True, f"{versus.describe()} faster than the stored winner, timed side by side"
    return False, f"kept the stored winner: the new best ran {versus.describe()} of its speed ({versus.verdict()})"


def _record(study, kernel, problem, best, configs, timings, incumbent, decision):
    """The Record of `best` from the final comparison's `timings` and the study."""
    timing = timings[best.label()]
    against_blas = measure.speedup(timing, timings["blas"])
    return store.Record(
        problem=problem, shape=study.user_attrs.get("shape", "?"), config=best, use=_use(timing, timings)[0],
        seconds=timing.median, spread=(timing.low, timing.high), rounds=timing.rounds,
        baselines={name: timings[name].median for name in ops.FALLBACKS if name in timings},
        vs_blas=(against_blas.median, against_blas.low, against_blas.high), decision=decision,
        finalists=tuple((c, timings[c.label()].median) for c in sorted(configs, key=lambda c: timings[c.label()].median)),
        blas=measure.blas_info(), trials=_trial_counts(study),
        compile_s=round(sum(t.user_attrs.get("compile_s", 0) for t in study.trials), 2),
        search_s=round(sum(t.duration.total_seconds() for t in study.trials if t.duration), 1),
        template=kernel.template, template_hash=render.template_hash(kernel),
        source_sha256=store.source_digest(render.render(kernel, best)), compile_flags=render.COMPILE_FLAGS,
        fingerprint=machine.fingerprint(), versions=_versions(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        replaces=incumbent.record.source_sha256 if incumbent else None)


def finalists(study, count=FINALISTS):
    """The best distinct configs of the study, best first."""
    configs = []
    for t in sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value):
        config = space.Config.from_dict(t.params)
        if config not in configs:
            configs.append(config)
    return configs[:count]


def _trial_counts(study):
    states = [t.state for t in study.trials]
    failures = collections.Counter(t.user_attrs["failure"][:160] for t in study.trials if "failure" in t.user_attrs)
    return {"complete": states.count(optuna.trial.TrialState.COMPLETE), "failed": states.count(optuna.trial.TrialState.FAIL),
            "rejected": states.count(optuna.trial.TrialState.PRUNED),
            "raced_out": sum("raced_out" in t.user_attrs for t in study.trials),
            "disturbed": sum("disturbed" in t.user_attrs for t in study.trials),
            "new_pace": sum("new_pace" in t.user_attrs for t in study.trials),
            "study": study.study_name, "failures": failures.most_common(5)}


def _fail_interrupted(study, earlier):
    """An interrupt between optuna creating a trial and running it leaves the trial RUNNING: end
    ours as failed (trials another worker started carry its pid and are left alone)."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number not in earlier and t.user_attrs.get("pid", os.getpid()) == os.getpid():
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def _versions():
    import numba
    return {"numba": numba.__version__, "numpy": np.__version__, "optuna": optuna.__version__}
