"""The built-in rule-based analyst: deterministic given a seed, no network, no PyTorch.

Used when no LLM endpoint is configured and whenever the LLM fails. It reads the curves the
way a practitioner would: each rule of :data:`RULES`, in this order, looks for one pattern in
the history and, when it sees it, writes a diagnosis and proposes the best trial's config
changed by its remedy (then perturbations of the top trials fill the quota):

1. :func:`divergence`       NaN / diverged trials -> lower the learning rate, warm up (turn a
                            warmup switch on, lengthen warmup_ratio/steps/epochs), clip
                            gradients when the space has a clip parameter
2. :func:`near_chance`      accuracy near chance, high lr -> lower the learning rate, warm up
3. :func:`overfitting`      growing train/val gap (val loss turning up while train loss
                            falls) -> more regularisation
4. :func:`underfitting`     best curve still rising at the last epoch -> raise lr a bit
5. :func:`range_edges`      top trials pressed against a range edge -> probe toward that edge
                            (and say: widen the range)
6. :func:`plateau`          no improvement for a while -> step aside (says so, proposes
                            nothing: exploration is left to TPE)
7. :func:`no_failure_pattern` when none of the above fires -> refine around the top trials

A rule finds the parameter it changes by its exact name, or one of the names in
:data:`ALIASES` (``lr`` or ``learning_rate``; ``dropout``, ``head_dropout``, ``drop_rate``...):
never by a part of a name, so ``min_lr`` is not taken for the learning rate. Warmup and
clipping are found by kind (any numeric parameter with ``warmup`` or ``clip`` in its name).
A categorical parameter whose choices are all numbers (a grid: ``lr: [0.001, 0.01, 0.1]``)
plays its role as an ordered scale: a remedy moves it to the level nearest its target in the
remedy's direction (at least one level, never past the last), so the remedies act on grid
spaces too (:func:`_levels`).

A proposal that repeats a configuration already tried (or one proposed before it in the same
analysis) is wasted: the sampler skips it as a duplicate. So a remedy that changes nothing
tried gives way to its alternative when that one is new, and a perturbation that lands on a
tried configuration is replaced by an untried neighbour of the trial it perturbs (one
parameter one level or one choice away, then two; :func:`_untried_neighbour`).

    >>> h = History(direction="minimize", space={"x": {"type": "float", "low": -5, "high": 5}},
    ...             trials=[TrialRecord(number=i, state="COMPLETE", value=(i - 2.0) ** 2,
    ...                                 params={"x": float(i)}) for i in range(5)])
    >>> reply = RulesAnalyst(seed=0).analyse(h)
    >>> len(reply.proposals) >= 1 and reply.diagnosis[0].state
    'exploring'
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo.sampler.analysis import Alternative, Diagnosis, Evidence, Proposal, Reply
from hpo.sampler.history import History, TrialRecord, curve_shape, same_params

# The names a rule accepts for each role, first match wins (exact names, never substrings).
ALIASES: dict[str, tuple[str, ...]] = {
    "lr": ("lr", "learning_rate"),
    "weight_decay": ("weight_decay", "wd"),
    "dropout": ("dropout", "head_dropout", "drop_rate", "dropout_rate"),
    "label_smoothing": ("label_smoothing", "smoothing"),
    "drop_path": ("drop_path", "drop_path_rate"),
}


def _find(space: dict[str, Any], role: str) -> str | None:
    """The numeric parameter of ``space`` that plays ``role`` (a key of :data:`ALIASES`): a
float or int, or a categorical with numeric choices (:func:`_levels`).

    >>> _find({"min_lr": {"type": "float"}, "lr": {"type": "float"}}, "lr")
    'lr'
    >>> _find({"min_lr": {"type": "float"}}, "lr") is None
    True
    >>> _find({"lr": {"type": "categorical", "choices": [0.01, 0.001]}}, "lr")
    'lr'
    """
    for name in ALIASES.get(role, (role,)):
        spec = space.get(name)
        if spec is not None and (spec.get("type") != "categorical" or _levels(spec)):
            return name
    return None


def _levels(spec: dict[str, Any]) -> list[float] | None:
    """The sorted choices of a categorical parameter whose choices are all numbers (a grid
    the rules treat as an ordered scale); None for any other parameter.

    >>> _levels({"type": "categorical", "choices": [0.03, 0.001, 0.01]})
    [0.001, 0.01, 0.03]
    >>> _levels({"type": "categorical", "choices": ["adamw", "sgd"]}) is None
    True
    """
    if spec.get("type") != "categorical":
        return None
    choices = spec.get("choices") or []
    if len(choices) < 2 or not all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                   and math.isfinite(c) for c in choices):
        return None
    return sorted(choices)


def _is_off(value: Any) -> bool:
    """A choice that means "no warmup" / "no clipping": none, off, null, False, 0."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return value.strip().lower() in ("none", "off", "null", "no", "false", "0", "")
    return isinstance(value, (int, float)) and value == 0


@dataclass(frozen=True)
class Finding:
    """What one rule saw in the history (its diagnoses) and the proposals it makes."""

    diagnoses: list[Diagnosis]
    proposals: list[Proposal] = field(default_factory=list)


@dataclass(frozen=True)
class Situation:
    """What the rules read besides the history, worked out once per analysis."""

    best: TrialRecord | None  # the best complete trial
    base: dict[str, Any]  # its params, which the remedies change ({} before one completed)
    lr: str | None  # the learning-rate parameter (exact name or alias), None if the space has none
    recent: list[TrialRecord]  # the last 12 finished trials, oldest first
    scored: list[TrialRecord]  # the scored trials, best first
    rng: random.Random  # the analysis' generator (perturbations draw from it, in rule order)
    # the configurations tried (every trial's params) and proposed so far in this analysis:
    # perturbations avoid them, the analysis adds each proposal
    taken: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, h: History, rng: random.Random | None = None) -> Situation:
        best = h.best()
        return cls(best=best, base=dict(best.params) if best else {}, lr=_find(h.space, "lr"),
                   recent=sorted(h.finished(), key=lambda t: t.number)[-12:], scored=h.scored(),
                   rng=random.Random(0) if rng is None else rng,
                   taken=[dict(t.params) for t in h.trials if t.params])


Rule = Callable[[History, Situation], Finding | None]


def divergence(h: History, s: Situation) -> Finding | None:
    """Recent trials that diverged: a reason that says so (diverged, NaN, non-finite, inf) or a
    non-finite value in any curve.

    Proposes a calmer start from the best trial (from the first diverged one before any trial
    completed): the learning rate down to a third of the lowest diverged one (halved at most,
    never below a twentieth; times 0.3 when no diverged lr is known), warmup on or longer,
    gradients clipped where the space can (:func:`_settle`); alternative: a 10x lower lr.

    >>> h = History(space={"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}},
    ...             trials=[TrialRecord(0, "COMPLETE", 0.8, {"lr": 0.01}),
    ...                     TrialRecord(1, "PRUNED", 0.1, {"lr": 0.3}, reason="diverged: NaN")])
    >>> found = divergence(h, Situation.of(h))
    >>> found.diagnoses[0].summary
    '1 of the last 2 trials diverged (NaN/inf) at lr 0.3..0.3'
    >>> found.proposals[0].params, found.proposals[0].alternatives[0].params
    ({'lr': 0.005}, {'lr': 0.001})
    """
    diverged = [t for t in s.recent if _diverged(t)]
    if not diverged:
        return None
    lr = s.lr
    lrs = [t.params[lr] for t in diverged if lr and lr in t.params]
    diagnosis = Diagnosis(state="diverging", summary=(
        f"{len(diverged)} of the last {len(s.recent)} trials diverged (NaN/inf)"
        + (f" at lr {min(lrs):.3g}..{max(lrs):.3g}" if lrs else "")),
        evidence=[Evidence(trial=t.number, metric="reason", value=None,
                           note=(t.reason or "non-finite value in curve")[:120])
                  for t in diverged[:3]])
    start = s.base or dict(diverged[0].params)
    factor = min(0.5, (min(lrs) / 3) / start.get(lr, 1.0)) if lrs else 0.3
    p, what = _settle(h, start, lr, max(factor, 0.05))
    return Finding([diagnosis], [Proposal(
        params=p, confidence=0.7,
        rationale=f"Diverging runs (NaN/inf): a calmer start: {what}.",
        expected_effect="no NaN; stable loss from the first epochs",
        risk="slower convergence if lr ends up too low",
        alternatives=[Alternative(params=_scale(h, start, lr, 0.1),
                                  note="a 10x lower lr, more conservative")])])


def near_chance(h: History, s: Situation) -> Finding | None:
    """Recent trials whose accuracy curve never got past 1.5x chance (``1 / n_classes`` from
    the history's context; maximised metrics with ``acc`` in their name) at an lr in the upper
    half of its range.

    Proposes the best trial with the lr a tenth of the lowest such lr (never above the best
    trial's, never below the range) and warmup on or longer; alternative: 3x that lr.

    >>> h = History(metric="val_acc", context={"n_classes": 10}, trials=[
    ...     TrialRecord(0, "COMPLETE", 0.9, {"lr": 0.003}, {"val_acc": [0.5, 0.9]}),
    ...     TrialRecord(1, "COMPLETE", 0.1, {"lr": 0.2}, {"val_acc": [0.1, 0.12]})],
    ...     space={"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True}})
    >>> found = near_chance(h, Situation.of(h))
    >>> found.diagnoses[0].summary
    '1 recent trials stayed near chance (0.1) with a high lr'
    >>> found.proposals[0].params
    {'lr': 0.003}
    """
    chance, lr = _chance(h), s.lr
    if chance is None or not lr:
        return None
    stuck = [t for t in s.recent if _near_chance(t, h.metric, chance)
             and lr in t.params and _pos(h.space[lr], t.params[lr]) > 0.5]
    if not stuck:
        return None
    t0 = stuck[0]
    shape = curve_shape(t0.curve.get(h.metric, []))
    diagnosis = Diagnosis(state="unstable", summary=(
        f"{len(stuck)} recent trials stayed near chance ({chance:.3g}) with a high lr"),
        evidence=[Evidence(trial=t.number, metric=h.metric, value=t.value,
                           note=f"lr {t.params[lr]:.3g}") for t in stuck[:3]]
        + ([Evidence(trial=t0.number, metric=h.metric, value=shape.get("best"),
                     note=f"best after {shape.get('n')} epochs")] if shape else []))
    target = min(s.base.get(lr, t0.params[lr]), min(t.params[lr] for t in stuck) / 10)
    p, warm = _warm_up(h, {**(s.base or t0.params), lr: _at_least_low(h.space[lr], target)})
    return Finding([diagnosis], [Proposal(
        params=p, confidence=0.6,
        rationale="Accuracy near chance after several epochs at a high lr means the "
                  f"optimiser overshoots; lower {lr} to {_short(p[lr])}"
                  + (f" and warm up ({', '.join(warm)})." if warm else "."),
        expected_effect=f"{h.metric} leaves chance level within the first epochs",
        risk="too low an lr underfits within the epoch budget",
        alternatives=[Alternative(params={lr: _at_least_low(h.space[lr], target * 3)},
                                  note="a milder reduction")])])


def overfitting(h: History, s: Situation) -> Finding | None:
    """A top-3 trial whose ``val_loss`` turned up (last > 1.1x its minimum, reached at least
    two epochs before the end) while ``train_loss`` kept falling.

    Proposes the best trial with more regularisation: weight decay x3, dropout +0.1, label
    smoothing +0.05, drop path +0.05 (those the space has); alternative: lr x0.7.

    >>> gap = {"val_loss": [1.0, 0.5, 0.6, 0.7], "train_loss": [1.0, 0.5, 0.3, 0.2]}
    >>> h = History(space={"lr": {"type": "float", "low": 1e-4, "high": 0.3},
    ...                    "dropout": {"type": "float", "low": 0.0, "high": 0.5}},
    ...             trials=[TrialRecord(0, "COMPLETE", 0.8, {"lr": 0.01, "dropout": 0.1}, gap)])
    >>> found = overfitting(h, Situation.of(h))
    >>> found.diagnoses[0].evidence[0].note
    'min 0.5 at epoch 2 of 4'
    >>> found.proposals[0].params
    {'lr': 0.01, 'dropout': 0.2}
    """
    gaps = [t for t in s.scored[:3] if _overfits(t)]
    if not gaps or not s.best:
        return None
    vl = curve_shape(gaps[0].curve["val_loss"], maximize=False)
    diagnosis = Diagnosis(state="overfitting", summary=(
        "validation loss turns up while training loss keeps falling"),
        evidence=[Evidence(trial=gaps[0].number, metric="val_loss", value=vl.get("last"),
                           note=f"min {vl.get('best')} at epoch {vl.get('best_epoch')} "
                                f"of {vl.get('n')}")])
    p = dict(s.base)
    for role, factor, add in (("weight_decay", 3.0, None), ("dropout", 1.0, 0.1),
                              ("label_smoothing", 1.0, 0.05), ("drop_path", 1.0, 0.05)):
        p = _scale(h, p, _find(h.space, role), factor, add)
    return Finding([diagnosis], [Proposal(
        params=p, confidence=0.5,
        rationale="A growing train/val gap in the best trials: add regularisation.",
        expected_effect="lower final val loss, smaller gap",
        risk="too much regularisation underfits",
        alternatives=[Alternative(params=_scale(h, s.base, s.lr, 0.7),
                                  note="a lower lr instead of more regularisation")])])


def underfitting(h: History, s: Situation) -> Finding | None:
    """The best trial's curve of the metric (or of ``value``) still improving at its last
    epoch: at least 3 epochs, best at the last, trend rising (falling when minimised), and no
    top-3 trial overfitting (:func:`overfitting` has the say then).

    Proposes the best trial learning faster: lr x1.5, weight decay halved; alternative (no
    params): more epochs.

    >>> h = History(space={"lr": {"type": "float", "low": 1e-4, "high": 0.3}},
    ...             trials=[TrialRecord(0, "COMPLETE", 0.8, {"lr": 0.01},
    ...                                 {"value": [0.5, 0.6, 0.7, 0.8]})])
    >>> found = underfitting(h, Situation.of(h))
    >>> found.diagnoses[0].summary, found.proposals[0].params
    ('the best trial was still improving at its last epoch', {'lr': 0.015})
    """
    best = s.best
    if not best or any(_overfits(t) for t in s.scored[:3]):
        return None
    curve = best.curve.get(h.metric) or best.curve.get("value") or []
    shape = curve_shape(curve, maximize=h.maximize)
    if shape.get("n", 0) < 3 or shape.get("best_epoch") != shape.get("n") \
            or shape.get("trend") != ("rising" if h.maximize else "falling"):
        return None
    diagnosis = Diagnosis(state="underfitting", summary=(
        "the best trial was still improving at its last epoch"),
        evidence=[Evidence(trial=best.number, metric=h.metric, value=shape.get("last"),
                           note=f"best at the last epoch ({shape.get('n')})")])
    p = _scale(h, _scale(h, s.base, s.lr, 1.5), _find(h.space, "weight_decay"), 0.5)
    return Finding([diagnosis], [Proposal(
        params=p, confidence=0.4,
        rationale="Still improving at the end of the budget: learn faster.",
        expected_effect=f"better {h.metric} within the same epochs",
        risk="instability if lr is already near its limit",
        alternatives=[Alternative(note="more epochs (outside the search space)")])])


def range_edges(h: History, s: Situation) -> Finding | None:
    """Numeric parameters that at least half of the top trials (the best fifth, at least 3)
    have within 10% of the range's low or high bound.

    Proposes, per such parameter and bound, the best trial with that parameter 70% of the way
    from its value to the bound, and says to consider widening the range; alternative:
    exactly at the bound.

    >>> h = History(space={"lr": {"type": "float", "low": 0.0, "high": 1.0}}, trials=[
    ...     TrialRecord(i, "COMPLETE", 1.0 - i / 10, {"lr": 0.95 - i / 100}) for i in range(3)])
    >>> found = range_edges(h, Situation.of(h))
    >>> found.diagnoses[0].summary
    '3 of the top 3 trials have lr near its high bound 1.0: consider widening the range'
    >>> round(found.proposals[0].params["lr"], 3)
    0.985
    """
    best, head = s.best, s.scored[: max(3, len(s.scored) // 5)]
    if not best or len(head) < 3:
        return None
    found = [hit for name, spec in h.space.items() for hit in _edge_hits(h, best, name, spec, head)]
    return Finding([d for d, _ in found], [p for _, p in found]) if found else None


def _edge_hits(h: History, best: TrialRecord, name: str, spec: dict[str, Any],
               head: list[TrialRecord]) -> list[tuple[Diagnosis, Proposal]]:
    """The diagnosis and probe of :func:`range_edges` for each bound ``name`` presses on."""
    if spec["type"] == "categorical" or name not in best.params or spec["high"] <= spec["low"]:
        return []
    pos = [_pos(spec, t.params[name]) for t in head if name in t.params]
    if len(pos) < 3:
        return []
    current = _pos(spec, best.params[name])
    hits = []
    for side, edge, near in (("low", 0.0, [x for x in pos if x < 0.1]),
                             ("high", 1.0, [x for x in pos if x > 0.9])):
        if len(near) * 2 < len(pos):
            continue
        diagnosis = Diagnosis(state="range_edge", summary=(
            f"{len(near)} of the top {len(pos)} trials have {name} near its {side} "
            f"bound {spec[side]}: consider widening the range"),
            evidence=[Evidence(trial=t.number, metric=name, value=t.params[name])
                      for t in head[:3] if name in t.params])
        hits.append((diagnosis, Proposal(
            params={**best.params, name: _val(spec, current + (edge - current) * 0.7)},
            confidence=0.45,
            rationale=f"The best values of {name} press against its {side} bound; "
                      "probe closer to it.",
            expected_effect=f"find whether {name} beyond the bound would help",
            risk="the optimum may already be inside the range",
            alternatives=[Alternative(params={name: spec[side]},
                                      note="exactly at the bound")])))
    return hits


def plateau(h: History, s: Situation) -> Finding | None:
    """No improvement of the best value in the last ``max(6, 2 x number of parameters)``
    finished trials.

    Proposes nothing: exploration on a plateau is left to TPE (the refinements around the top
    trials fill the analysis' quota as usual). Measured on the replayed table (20 seeds x 100
    trials, benchmarks/RESULTS.md "replay"), its former proposals, perturbations of the
    runners-up (sigma 0.25, flips 30%), beat 41% of the TPE trials around them while spending
    104 of the 229 proposal trials; without them trials to TPE's median best were 14 (IQR
    11-20) against 14.5 (10-24). Keeping only one proposal per analysis on a plateau was worse
    (16, 12-26; 4 of 20 seeds never reached it).

    >>> h = History(space={"x": {"type": "float", "low": 0.0, "high": 1.0}}, trials=[
    ...     TrialRecord(i, "COMPLETE", 1.0 - i / 10, {"x": i / 10}) for i in range(7)])
    >>> found = plateau(h, Situation.of(h))
    >>> found.diagnoses[0].summary, found.proposals
    ("no improvement in the last 6 finished trials; plateau: left to TPE's own exploration", [])
    """
    stale = h.stale()
    if not s.best or stale < max(6, len(h.space) * 2):
        return None
    return Finding([Diagnosis(state="plateau", summary=(
        f"no improvement in the last {stale} finished trials; {PLATEAU_ASIDE}"),
        evidence=[Evidence(trial=s.best.number, metric=h.metric, value=s.best.value,
                           note=f"best so far, {stale} trials ago")])])


# What the plateau diagnosis says: the rules analyst steps aside (see :func:`plateau`).
PLATEAU_ASIDE = "plateau: left to TPE's own exploration"


def no_failure_pattern(h: History, s: Situation) -> Finding:
    """What the analysis says when no rule of :data:`RULES` fired: ``exploring`` before 20
    scored trials, ``converging`` after, with the best trial as evidence. It proposes nothing
    itself: the refinements around the top trials that fill every analysis are enough.

    >>> no_failure_pattern(History(), Situation.of(History())).diagnoses[0].state
    'exploring'
    """
    best, n = s.best, len(s.scored)
    return Finding([Diagnosis(
        state="exploring" if n < 20 else "converging",
        summary="no failure pattern; refine around the best trials",
        evidence=[Evidence(trial=best.number if best else None, metric=h.metric,
                           value=best.value if best else None,
                           note=f"best of {n} scored trials")] if n else [])])


# Which rule wrote a proposal, by how its rationale starts (benchmarks count what each earns).
RATIONALES: dict[str, tuple[str, ...]] = {
    "divergence": ("Diverging runs",), "near_chance": ("Accuracy near chance",),
    "overfitting": ("A growing train/val gap",), "underfitting": ("Still improving",),
    "range_edges": ("The best values of",), "plateau": ("Plateau:",),
    "refinement": ("Local refinement", "No scored trial")}


def rule_of(rationale: str) -> str:
    """The rule of :data:`RULES` (or ``refinement``, the fill) that wrote a rules proposal,
    from its rationale; ``other`` for any other text (an LLM's).

    >>> rule_of("Plateau: explore around a runner-up."), rule_of("lower the lr")
    ('plateau', 'other')
    """
    return next((rule for rule, starts in RATIONALES.items() if rationale.startswith(starts)),
                "other")


# The rules, in the order their diagnoses and proposals appear in the analysis.
RULES: tuple[Rule, ...] = (divergence, near_chance, overfitting, underfitting, range_edges,
                           plateau)


class RulesAnalyst:
    """Diagnose from curves and propose; the same history and seed give the same analysis."""

    name = "rules"

    def __init__(self, seed: int = 0, max_proposals: int = 3) -> None:
        self.seed, self.max_proposals = seed, max_proposals

    def analyse(self, h: History, salt: int = 0) -> Reply:
        s = Situation.of(h, random.Random(
            self.seed * 1_000_003 + len(h.finished()) * 7919 + salt))
        findings = []
        for rule in RULES:
            found = rule(h, s)
            if found is not None:
                found = _untried_remedies(found, s.taken)
                findings.append(found)
                s.taken.extend(p.params for p in found.proposals)
        findings = findings or [no_failure_pattern(h, s)]
        diagnoses = [d for f in findings for d in f.diagnoses]
        proposals = self._fill(h, s, [p for f in findings for p in f.proposals])
        states = ", ".join(d.state for d in diagnoses)
        return Reply(summary=f"Rule-based analysis of {len(h.finished())} finished trials: "
                             f"{states}.", diagnosis=diagnoses,
                     proposals=proposals[: self.max_proposals])

    def _fill(self, h: History, s: Situation, proposals: list[Proposal]) -> list[Proposal]:
        """``proposals`` then, up to the quota, perturbations of the top three trials in turn
        (sigma 0.08 of each range, wider each round); the middle of the space when there is
        neither a scored trial nor a proposal."""
        top = s.scored[:3]
        if not top:
            return proposals or [Proposal(
                params={n: _middle(spec) for n, spec in h.space.items()},
                rationale="No scored trial yet: try the middle of the space.", confidence=0.1)]
        refinements = []
        for i in range(self.max_proposals - len(proposals)):
            t = top[i % len(top)]
            refinements.append(_perturb(h, t, s.rng, 0.08 * (1 + i // 3), 0.15,
                                        f"Local refinement around trial {t.number}.", s.taken))
        return proposals + refinements


def _untried_remedies(found: Finding, taken: list[dict[str, Any]]) -> Finding:
    """``found`` with each proposal that repeats a configuration in ``taken`` replaced by its
    first alternative that names values and is new (the remedy as such was tried already);
    a proposal with no such alternative stays (the sampler skips it as a duplicate)."""
    proposals = []
    for p in found.proposals:
        if _seen(p.params, taken):
            for alt in p.alternatives:
                params = {**p.params, **alt.params}
                if alt.params and not _seen(params, taken):
                    p = p.model_copy(update={
                        "params": params,
                        "rationale": f"{p.rationale} Tried already; instead: {alt.note}.",
                        "alternatives": [a for a in p.alternatives if a is not alt]})
                    break
        proposals.append(p)
    return Finding(found.diagnoses, proposals)


# -- coordinates in [0, 1] and the changes the remedies make ----------------------------------
def _pos(spec: dict[str, Any], value: float) -> float:
    levels = _levels(spec)
    if levels is not None:  # a grid: the level's index, 0 at the lowest, 1 at the highest
        return levels.index(_nearest(levels, value)) / (len(levels) - 1)
    lo, hi = float(spec["low"]), float(spec["high"])
    if hi <= lo:
        return 0.5
    if spec.get("log"):
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (value - lo) / (hi - lo)


def _val(spec: dict[str, Any], pos: float) -> float:
    lo, hi = float(spec["low"]), float(spec["high"])
    pos = min(max(pos, 0.0), 1.0)
    x = math.exp(math.log(lo) + pos * (math.log(hi) - math.log(lo))) if spec.get("log") \
        else lo + pos * (hi - lo)
    return round(x) if spec["type"] == "int" else x


def _scale(h: History, params: dict[str, Any], name: str | None, factor: float,
           add: float | None = None) -> dict[str, Any]:
    """params with ``name`` multiplied by ``factor`` (or ``add`` added), within bounds."""
    if name is None or name not in h.space:
        return params
    spec = h.space[name]
    levels = _levels(spec)
    if levels is not None:
        return {**params, name: _step(levels, params.get(name), factor, add)}
    old = params.get(name, _val(spec, 0.5))
    new = old + add if add is not None else old * factor
    if add is None and old == 0:
        new = _val(spec, 0.25)
    new = min(max(new, spec["low"]), spec["high"])
    return {**params, name: round(new) if spec["type"] == "int" else new}


def _nearest(levels: list[float], x: float) -> float:
    """The level nearest ``x`` (by ratio when every level and ``x`` are positive)."""
    if x > 0 and levels[0] > 0:
        return min(levels, key=lambda v: abs(math.log(v / x)))
    return min(levels, key=lambda v: abs(v - x))


def _step(levels: list[float], old: Any, factor: float, add: float | None) -> float:
    """A grid's remedy: the level nearest ``old * factor`` (or ``old + add``) among the levels
    beyond ``old`` in that direction: at least one level, ``old`` when there is none left.

    >>> _step([0.0003, 0.001, 0.003, 0.01, 0.03], 0.01, 1.5, None)   # x1.5: one level up
    0.03
    >>> _step([0.0003, 0.001, 0.003, 0.01, 0.03], 0.03, 0.1, None)   # x0.1: the level nearest
    0.003
    >>> _step([0.0, 0.2], 0.0, 1.0, 0.05), _step([0.0, 0.2], 0.2, 1.0, 0.05)
    (0.2, 0.2)
    >>> _step([0.0, 0.01, 0.1], 0.0, 3.0, None)                      # x3 of nothing: one up
    0.01
    """
    if not isinstance(old, (int, float)) or isinstance(old, bool):
        old = levels[len(levels) // 2]
    target = old + add if add is not None else old * factor
    if add is None and old == 0:  # a factor of nothing: the next level that way
        up, down = [v for v in levels if v > old], [v for v in levels if v < old]
        return (up[0] if up and factor > 1 else down[-1] if down and factor < 1 else old)
    if target > old:
        beyond = [v for v in levels if v > old]
    elif target < old:
        beyond = [v for v in levels if v < old]
    else:
        return old
    return _nearest(beyond, target) if beyond else old


def _at_least_low(spec: dict[str, Any], x: float) -> float:
    """``x`` raised to the range's low bound (a grid: its nearest level)."""
    levels = _levels(spec)
    return _nearest(levels, x) if levels is not None else max(x, spec["low"])


def _warm_up(h: History, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``params`` with a (longer) learning-rate warmup, in whatever shape the space has it.

    A categorical switch (``warmup: [none, linear, cosine]``) is turned on (linear when it
    is a choice), then every numeric length (``warmup_ratio``, ``warmup_steps``,
    ``warmup_epochs``) whose condition holds is set: to the middle of its range when the
    warmup was off, a quarter of the range longer when it was on. Returns the new params
    and what changed, in words.
    """
    p, changes = dict(params), []
    was_on = True
    for name, spec in h.space.items():
        if spec["type"] != "categorical" or "warmup" not in name:
            continue
        on = [c for c in spec["choices"] if not _is_off(c)]
        if not on or not _active(spec, p):
            continue
        if _is_off(p.get(name)):
            was_on = False
            p[name] = "linear" if "linear" in on else on[0]
            changes.append(f"{name} {p[name]}")
    for name, spec in h.space.items():
        if spec["type"] == "categorical" or "warmup" not in name or not _active(spec, p) \
                or spec["high"] <= spec["low"]:
            continue
        old = p.get(name)
        if old is None or not was_on:
            pos = max(0.5, _pos(spec, old) if old is not None else 0.0)
        else:
            pos = _pos(spec, old) + 0.25
        new = _val(spec, pos)
        if spec["type"] == "int" and old is not None and new <= old < spec["high"]:
            new = old + 1
        if new != old:
            p[name] = new
            changes.append(f"{name} {_short(new)}")
    return p, changes


def _clip(h: History, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``params`` with gradient clipping on or tighter, when the space has such a parameter."""
    p = dict(params)
    for name, spec in h.space.items():
        if "clip" not in name or not _active(spec, p):
            continue
        old = p.get(name)
        if spec["type"] == "categorical":
            limits = sorted(c for c in spec["choices"] if isinstance(c, (int, float))
                            and not isinstance(c, bool) and c > 0)
            if not limits:
                continue
            if _is_off(old) or not isinstance(old, (int, float)):
                new = limits[0]  # the tightest limit: divergence is the reason we are here
            else:
                new = max([c for c in limits if c < old], default=old)
        elif spec["high"] <= spec["low"]:
            continue
        else:
            new = _scale(h, p, name, 0.5)[name] if old is not None and not _is_off(old) \
                else _val(spec, 0.25)
        if new != old:
            p[name] = new
            return p, [f"{name} {_short(new)}"]
    return p, []


def _settle(h: History, params: dict[str, Any], lr: str | None, factor: float
            ) -> tuple[dict[str, Any], str]:
    """A calmer start: ``lr`` times ``factor``, warmup on, gradients clipped where possible;
    returns the params and a sentence saying what was changed."""
    p = _scale(h, params, lr, factor) if lr else dict(params)
    what = [f"{lr} {_short(params[lr])} -> {_short(p[lr])}"] if lr and lr in params \
        and p.get(lr) != params.get(lr) else []
    p, warm = _warm_up(h, p)
    p, clip = _clip(h, p)
    what += [f"warmup ({', '.join(warm)})"] if warm else []
    what += [f"clip gradients ({', '.join(clip)})"] if clip else []
    return p, "; ".join(what) or "no change possible in this space"


def _middle(spec: dict[str, Any]) -> Any:
    return spec["choices"][0] if spec["type"] == "categorical" else _val(spec, 0.5)


def _perturb(h: History, t: TrialRecord, rng: random.Random, sigma: float,
             flip: float, why: str, avoid: list[dict[str, Any]] | None = None) -> Proposal:
    """``t``'s params moved at random: numbers by ``sigma`` of their range, choices flipped
    with probability ``flip``. With ``avoid`` (the configurations tried or proposed so far), a
    draw that repeats one of them is replaced by an untried neighbour of ``t`` when there is
    one (:func:`_untried_neighbour`), and the proposal's params are added to ``avoid``."""
    p: dict[str, Any] = {}
    for name, spec in h.space.items():
        if not _active(spec, p):
            continue
        old = t.params.get(name)
        if spec["type"] == "categorical":
            p[name] = rng.choice(spec["choices"]) if old is None or rng.random() < flip else old
        else:
            pos = _pos(spec, old) if old is not None else 0.5
            p[name] = _val(spec, pos + rng.gauss(0.0, sigma))
    if avoid is not None:
        if _seen(p, avoid):
            p = _untried_neighbour(h, t.params, rng, avoid) or p
        avoid.append(p)
    return Proposal(params=p, confidence=0.3, rationale=why,
                    expected_effect=f"a {h.metric} close to or better than trial {t.number}",
                    risk="small: a nearby configuration")


def _seen(params: dict[str, Any], configs: list[dict[str, Any]]) -> bool:
    """Whether ``params`` is one of ``configs`` (:func:`~hpo.sampler.history.same_params`)."""
    return any(same_params(params, c) for c in configs)


def _moves(spec: dict[str, Any], old: Any) -> list[Any]:
    """The values one step from ``old``: the adjacent levels of a grid, every other choice of
    a categorical, +-1 of an int, +-10% of the range of a float (within the bounds)."""
    levels = _levels(spec)
    if levels is not None:
        if not isinstance(old, (int, float)) or isinstance(old, bool):
            return levels
        i = levels.index(_nearest(levels, old))
        return [levels[j] for j in (i - 1, i + 1) if 0 <= j < len(levels)]
    if spec["type"] == "categorical":
        return [c for c in spec["choices"] if c != old]
    if old is None or spec["high"] <= spec["low"]:
        return [_middle(spec)]
    if spec["type"] == "int":
        return [v for v in (old - 1, old + 1) if spec["low"] <= v <= spec["high"]]
    pos = _pos(spec, old)
    return [_val(spec, x) for x in (pos - 0.1, pos + 0.1) if 0.0 <= x <= 1.0]


def _complete(h: History, params: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """``params`` as a configuration of the space: active parameters only, in space order,
    a missing one from ``source`` (else the middle of its range)."""
    out: dict[str, Any] = {}
    for name, spec in h.space.items():
        if _active(spec, out):
            out[name] = params[name] if name in params else source.get(name, _middle(spec))
    return out


def _untried_neighbour(h: History, params: dict[str, Any], rng: random.Random,
                       avoid: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A configuration one step from ``params`` (one parameter changed by :func:`_moves`),
    else two steps, that is none of ``avoid``; None when every one tried is taken.

    >>> space = {"lr": {"type": "categorical", "choices": [0.001, 0.01, 0.1]},
    ...          "opt": {"type": "categorical", "choices": ["adamw", "sgd"]}}
    >>> tried = [{"lr": 0.01, "opt": "adamw"}, {"lr": 0.001, "opt": "adamw"},
    ...          {"lr": 0.1, "opt": "adamw"}]
    >>> _untried_neighbour(History(space=space), tried[0], random.Random(0), tried)
    {'lr': 0.01, 'opt': 'sgd'}
    """
    base = _complete(h, params, params)
    singles = [(name, v) for name, spec in h.space.items() if name in base
               for v in _moves(spec, base[name])]
    rng.shuffle(singles)
    for name, v in singles:
        cand = _complete(h, {**base, name: v}, base)
        if not _seen(cand, avoid):
            return cand
    for _ in range(4 * len(singles) if len(singles) > 1 else 0):
        (n1, v1), (n2, v2) = rng.sample(singles, 2)
        if n1 == n2:
            continue
        cand = _complete(h, {**base, n1: v1, n2: v2}, base)
        if not _seen(cand, avoid):
            return cand
    return None


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _active(spec: dict[str, Any], chosen: dict[str, Any]) -> bool:
    """Whether a parameter's ``condition`` holds for the values chosen so far."""
    for name, wanted in (spec.get("condition") or {}).items():
        if chosen.get(name) not in (wanted if isinstance(wanted, list) else [wanted]):
            return False
    return True


def _diverged(t: TrialRecord) -> bool:
    if t.reason and any(w in t.reason.lower() for w in ("diverg", "nan", "non-finite", "inf")):
        return True
    return any(not math.isfinite(v)
               for curve in t.curve.values() for v in curve if isinstance(v, float))


def _chance(h: History) -> float | None:
    if not h.maximize or "acc" not in h.metric:
        return None
    n = h.context.get("n_classes")
    return 1.0 / n if n else None


def _near_chance(t: TrialRecord, metric: str, chance: float) -> bool:
    curve = [v for v in t.curve.get(metric, []) if isinstance(v, (int, float))]
    return len(curve) >= 2 and max(curve) <= chance * 1.5


def _overfits(t: TrialRecord) -> bool:
    vl, tl = t.curve.get("val_loss") or [], t.curve.get("train_loss") or []
    if len(vl) < 4 or len(tl) < 4:
        return False
    finite = [v for v in vl if not math.isnan(v)]
    if len(finite) < 4:
        return False
    best_i = vl.index(min(finite))
    return best_i < len(vl) - 2 and vl[-1] > min(finite) * 1.1 and tl[-1] < tl[best_i]
