"""The built-in rule-based analyst: deterministic given a seed, no network, no PyTorch.

Used when no LLM endpoint is configured and whenever the LLM fails. It reads the curves the
way a practitioner would, in this order, and proposes the best trial's config changed by each
rule that fires (then perturbations of the top trials to fill the quota):

1. NaN / diverged trials              -> lower the learning rate, warm up (turn a warmup
                                         switch on, lengthen warmup_ratio/steps/epochs),
                                         clip gradients when the space has a clip parameter
2. accuracy near chance, high lr      -> lower the learning rate, add warmup
3. growing train/val gap (val loss turning up while train loss falls) -> more regularisation
4. best curve still rising at the last epoch, train loss falling -> underfitting: raise lr a bit
5. top trials pressed against a range edge -> probe toward that edge (and say: widen the range)
6. no improvement for a while          -> plateau: explore around the runners-up
7. otherwise                           -> perturb the top trials

A rule finds the parameter it changes by its exact name, or one of the names in
:data:`ALIASES` (``lr`` or ``learning_rate``; ``dropout``, ``head_dropout``, ``drop_rate``...):
never by a part of a name, so ``min_lr`` is not taken for the learning rate. Warmup and
clipping are found by kind (any numeric parameter with ``warmup`` or ``clip`` in its name).

    >>> from hpo.sampler.history import History, TrialRecord
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
from typing import Any

from hpo.sampler.analysis import Alternative, Diagnosis, Evidence, Proposal, Reply
from hpo.sampler.history import History, TrialRecord, curve_shape

# The names a rule accepts for each role, first match wins (exact names, never substrings).
ALIASES: dict[str, tuple[str, ...]] = {
    "lr": ("lr", "learning_rate"),
    "weight_decay": ("weight_decay", "wd"),
    "dropout": ("dropout", "head_dropout", "drop_rate", "dropout_rate"),
    "label_smoothing": ("label_smoothing", "smoothing"),
    "drop_path": ("drop_path", "drop_path_rate"),
}


def _find(space: dict[str, Any], role: str) -> str | None:
    """The numeric parameter of ``space`` that plays ``role`` (a key of :data:`ALIASES`).

    >>> _find({"min_lr": {"type": "float"}, "lr": {"type": "float"}}, "lr")
    'lr'
    >>> _find({"min_lr": {"type": "float"}}, "lr") is None
    True
    """
    for name in ALIASES.get(role, (role,)):
        spec = space.get(name)
        if spec is not None and spec.get("type") != "categorical":
            return name
    return None


def _is_off(value: Any) -> bool:
    """A choice that means "no warmup" / "no clipping": none, off, null, False, 0."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return value.strip().lower() in ("none", "off", "null", "no", "false", "0", "")
    return isinstance(value, (int, float)) and value == 0


class RulesAnalyst:
    """Diagnose from curves and propose; the same history and seed give the same analysis."""

    name = "rules"

    def __init__(self, seed: int = 0, max_proposals: int = 3) -> None:
        self.seed, self.max_proposals = seed, max_proposals

    # -- coordinates in [0, 1] ------------------------------------------------------------
    def _pos(self, spec: dict[str, Any], value: float) -> float:
        lo, hi = float(spec["low"]), float(spec["high"])
        if hi <= lo:
            return 0.5
        if spec.get("log"):
            return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (value - lo) / (hi - lo)

    def _val(self, spec: dict[str, Any], pos: float) -> float:
        lo, hi = float(spec["low"]), float(spec["high"])
        pos = min(max(pos, 0.0), 1.0)
        x = math.exp(math.log(lo) + pos * (math.log(hi) - math.log(lo))) if spec.get("log") \
            else lo + pos * (hi - lo)
        return round(x) if spec["type"] == "int" else x

    def _scale(self, h: History, params: dict[str, Any], name: str | None, factor: float,
               add: float | None = None) -> dict[str, Any]:
        """params with ``name`` multiplied by ``factor`` (or ``add`` added), within bounds."""
        if name is None or name not in h.space:
            return params
        spec = h.space[name]
        old = params.get(name, self._val(spec, 0.5))
        new = old + add if add is not None else old * factor
        if add is None and old == 0:
            new = self._val(spec, 0.25)
        new = min(max(new, spec["low"]), spec["high"])
        return {**params, name: round(new) if spec["type"] == "int" else new}

    def _warm_up(self, h: History, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
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
                pos = max(0.5, self._pos(spec, old) if old is not None else 0.0)
            else:
                pos = self._pos(spec, old) + 0.25
            new = self._val(spec, pos)
            if spec["type"] == "int" and old is not None and new <= old < spec["high"]:
                new = old + 1
            if new != old:
                p[name] = new
                changes.append(f"{name} {_short(new)}")
        return p, changes

    def _clip(self, h: History, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
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
                new = self._scale(h, p, name, 0.5)[name] if old is not None and not _is_off(old) \
                    else self._val(spec, 0.25)
            if new != old:
                p[name] = new
                return p, [f"{name} {_short(new)}"]
        return p, []

    def _settle(self, h: History, params: dict[str, Any], lr: str | None, factor: float
                ) -> tuple[dict[str, Any], str]:
        """A calmer start: ``lr`` times ``factor``, warmup on, gradients clipped where possible;
        returns the params and a sentence saying what was changed."""
        p = self._scale(h, params, lr, factor) if lr else dict(params)
        what = [f"{lr} {_short(params[lr])} -> {_short(p[lr])}"] if lr and lr in params \
            and p.get(lr) != params.get(lr) else []
        p, warm = self._warm_up(h, p)
        p, clip = self._clip(h, p)
        what += [f"warmup ({', '.join(warm)})"] if warm else []
        what += [f"clip gradients ({', '.join(clip)})"] if clip else []
        return p, "; ".join(what) or "no change possible in this space"

    # -- the analysis ----------------------------------------------------------------------
    def analyse(self, h: History, salt: int = 0) -> Reply:
        rng = random.Random(self.seed * 1_000_003 + len(h.finished()) * 7919 + salt)
        best = h.best()
        base = dict(best.params) if best else {}
        diagnoses: list[Diagnosis] = []
        proposals: list[Proposal] = []
        lr = _find(h.space, "lr")
        recent = sorted(h.finished(), key=lambda t: t.number)[-12:]

        # 1. divergence
        diverged = [t for t in recent if _diverged(t)]
        if diverged:
            lrs = [t.params[lr] for t in diverged if lr and lr in t.params]
            ev = [Evidence(trial=t.number, metric="reason", value=None,
                           note=(t.reason or "non-finite value in curve")[:120]) for t in diverged[:3]]
            diagnoses.append(Diagnosis(state="diverging", evidence=ev, summary=(
                f"{len(diverged)} of the last {len(recent)} trials diverged (NaN/inf)"
                + (f" at lr {min(lrs):.3g}..{max(lrs):.3g}" if lrs else ""))))
            start = base or dict(diverged[0].params)
            factor = 0.3 if not lrs or not lr else min(0.5, (min(lrs) / 3) / start.get(lr, 1.0))
            p, what = self._settle(h, start, lr, max(factor, 0.05))
            proposals.append(Proposal(
                params=p, confidence=0.7,
                rationale=f"Diverging runs (NaN/inf): a calmer start: {what}.",
                expected_effect="no NaN; stable loss from the first epochs",
                risk="slower convergence if lr ends up too low",
                alternatives=[Alternative(params=self._scale(h, start, lr, 0.1),
                                          note="a 10x lower lr, more conservative")]))

        # 2. near chance with a high learning rate
        chance = _chance(h)
        if chance is not None and lr:
            stuck = [t for t in recent if _near_chance(t, h.metric, chance)
                     and lr in t.params and self._pos(h.space[lr], t.params[lr]) > 0.5]
            if stuck:
                t0 = stuck[0]
                shape = curve_shape(t0.curve.get(h.metric, []))
                diagnoses.append(Diagnosis(state="unstable", summary=(
                    f"{len(stuck)} recent trials stayed near chance ({chance:.3g}) with a high lr"),
                    evidence=[Evidence(trial=t.number, metric=h.metric, value=t.value,
                                       note=f"lr {t.params[lr]:.3g}") for t in stuck[:3]]
                    + ([Evidence(trial=t0.number, metric=h.metric, value=shape.get("best"),
                                 note=f"best after {shape.get('n')} epochs")] if shape else [])))
                target = min(base.get(lr, t0.params[lr]), min(t.params[lr] for t in stuck) / 10)
                p = self._scale(h, base or dict(t0.params), lr, 1.0)
                p = {**p, lr: max(target, h.space[lr]["low"])}
                p, warm = self._warm_up(h, p)
                proposals.append(Proposal(
                    params=p, confidence=0.6,
                    rationale="Accuracy near chance after several epochs at a high lr means the "
                              f"optimiser overshoots; lower {lr} to {_short(p[lr])}"
                              + (f" and warm up ({', '.join(warm)})." if warm else "."),
                    expected_effect=f"{h.metric} leaves chance level within the first epochs",
                    risk="too low an lr underfits within the epoch budget",
                    alternatives=[Alternative(params={lr: max(target * 3, h.space[lr]["low"])},
                                              note="a milder reduction")]))

        top = h.scored()[:3]
        # 3. overfitting
        gaps = [t for t in top if _overfits(t)]
        if gaps and best:
            t0 = gaps[0]
            vl = curve_shape(t0.curve["val_loss"], maximize=False)
            diagnoses.append(Diagnosis(state="overfitting", summary=(
                "validation loss turns up while training loss keeps falling"),
                evidence=[Evidence(trial=t0.number, metric="val_loss", value=vl.get("last"),
                                   note=f"min {vl.get('best')} at epoch {vl.get('best_epoch')} "
                                        f"of {vl.get('n')}")]))
            p = dict(base)
            for name, factor, add in (("weight_decay", 3.0, None), ("dropout", 1.0, 0.1),
                                      ("label_smoothing", 1.0, 0.05), ("drop_path", 1.0, 0.05)):
                p = self._scale(h, p, _find(h.space, name), factor, add)
            proposals.append(Proposal(
                params=p, confidence=0.5,
                rationale="A growing train/val gap in the best trials: add regularisation.",
                expected_effect="lower final val loss, smaller gap",
                risk="too much regularisation underfits",
                alternatives=[Alternative(params=self._scale(h, base, lr, 0.7),
                                          note="a lower lr instead of more regularisation")]))

        # 4. underfitting
        if best and not gaps:
            curve = best.curve.get(h.metric) or best.curve.get("value") or []
            shape = curve_shape(curve, maximize=h.maximize)
            if shape.get("n", 0) >= 3 and shape.get("best_epoch") == shape.get("n") \
                    and shape.get("trend") == ("rising" if h.maximize else "falling"):
                diagnoses.append(Diagnosis(state="underfitting", summary=(
                    "the best trial was still improving at its last epoch"),
                    evidence=[Evidence(trial=best.number, metric=h.metric,
                                       value=shape.get("last"),
                                       note=f"best at the last epoch ({shape.get('n')})")]))
                p = self._scale(h, base, lr, 1.5)
                p = self._scale(h, p, _find(h.space, "weight_decay"), 0.5)
                proposals.append(Proposal(
                    params=p, confidence=0.4,
                    rationale="Still improving at the end of the budget: learn faster.",
                    expected_effect=f"better {h.metric} within the same epochs",
                    risk="instability if lr is already near its limit",
                    alternatives=[Alternative(note="more epochs (outside the search space)")]))

        # 5. range edges
        scored = h.scored()
        head = scored[: max(3, len(scored) // 5)]
        for name, spec in h.space.items():
            if spec["type"] == "categorical" or not best or name not in best.params \
                    or len(head) < 3 or spec["high"] <= spec["low"]:
                continue
            pos = [self._pos(spec, t.params[name]) for t in head if name in t.params]
            for edge, near in ((0.0, [x for x in pos if x < 0.1]), (1.0, [x for x in pos if x > 0.9])):
                if len(near) * 2 >= len(pos) and len(pos) >= 3:
                    side = "low" if edge == 0.0 else "high"
                    diagnoses.append(Diagnosis(state="range_edge", summary=(
                        f"{len(near)} of the top {len(pos)} trials have {name} near its {side} "
                        f"bound {spec[side]}: consider widening the range"),
                        evidence=[Evidence(trial=t.number, metric=name, value=t.params[name])
                                  for t in head[:3] if name in t.params]))
                    current = self._pos(spec, best.params[name])
                    p = {**base, name: self._val(spec, current + (edge - current) * 0.7)}
                    proposals.append(Proposal(
                        params=p, confidence=0.45,
                        rationale=f"The best values of {name} press against its {side} bound; "
                                  "probe closer to it.",
                        expected_effect=f"find whether {name} beyond the bound would help",
                        risk="the optimum may already be inside the range",
                        alternatives=[Alternative(params={name: spec[side]},
                                                  note="exactly at the bound")]))

        # 6. plateau
        stale = h.stale()
        patience = max(6, len(h.space) * 2)
        if best and stale >= patience:
            diagnoses.append(Diagnosis(state="plateau", summary=(
                f"no improvement in the last {stale} finished trials"),
                evidence=[Evidence(trial=best.number, metric=h.metric, value=best.value,
                                   note=f"best so far, {stale} trials ago")]))
            for t in scored[1:3]:
                proposals.append(self._perturb(h, t, rng, 0.25, 0.3,
                                               "Plateau: explore around a runner-up."))

        # 7. fill with perturbations of the top trials
        if not diagnoses:
            shape = curve_shape([t.value for t in sorted(scored, key=lambda t: t.number)],
                                maximize=h.maximize) if scored else {}
            diagnoses.append(Diagnosis(state="exploring" if len(scored) < 20 else "converging",
                                       summary="no failure pattern; refine around the best trials",
                                       evidence=[Evidence(trial=best.number if best else None,
                                                          metric=h.metric,
                                                          value=best.value if best else None,
                                                          note=f"best of {len(scored)} scored "
                                                               f"trials")] if shape else []))
        i = 0
        while len(proposals) < self.max_proposals and scored:
            t = scored[i % min(3, len(scored))]
            proposals.append(self._perturb(h, t, rng, 0.08 * (1 + i // 3), 0.15,
                                           f"Local refinement around trial {t.number}."))
            i += 1
            if i > 3 * self.max_proposals:
                break
        if not scored and not proposals:
            proposals.append(Proposal(params={n: self._middle(s) for n, s in h.space.items()},
                                      rationale="No scored trial yet: try the middle of the space.",
                                      confidence=0.1))
        states = ", ".join(d.state for d in diagnoses)
        return Reply(summary=f"Rule-based analysis of {len(h.finished())} finished trials: "
                             f"{states}.", diagnosis=diagnoses,
                     proposals=proposals[: self.max_proposals])

    def _middle(self, spec: dict[str, Any]) -> Any:
        return spec["choices"][0] if spec["type"] == "categorical" else self._val(spec, 0.5)

    def _perturb(self, h: History, t: TrialRecord, rng: random.Random, sigma: float,
                 flip: float, why: str) -> Proposal:
        p: dict[str, Any] = {}
        for name, spec in h.space.items():
            if not _active(spec, p):
                continue
            old = t.params.get(name)
            if spec["type"] == "categorical":
                p[name] = rng.choice(spec["choices"]) if old is None or rng.random() < flip else old
            else:
                pos = self._pos(spec, old) if old is not None else 0.5
                p[name] = self._val(spec, pos + rng.gauss(0.0, sigma))
        return Proposal(params=p, confidence=0.3, rationale=why,
                        expected_effect=f"a {h.metric} close to or better than trial {t.number}",
                        risk="small: a nearby configuration")


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
