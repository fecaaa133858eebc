"""Sampler efficiency: random vs TPE vs llm-tpe (rules analyst; and the LLM analyst when an
endpoint is configured), same seeds, same budget.

The mobilenet digits study (its search space, median pruner and objective) with a cheap but real
model so that 5 seeds x 3 samplers x 30 trials fit on a 2-core CPU: timm's ``test_efficientnet``
(a 0.1 M-parameter EfficientNet) at 16 px, at most 4 epochs per trial. Per sampler, over seeds:
the best validation accuracy after 10, 20 and 30 finished trials (median, min-max) and the
trials needed to reach TPE's best-at-30 of the same seed ("never" counts as 31 in the median).
llm-tpe's analyst runs inline (``background: false``) so a seed's run is reproducible.

Targets: llm-tpe reaches TPE's best-at-30 in at most 15 trials (median over seeds), and is never
worse than TPE at 30 beyond seed spread: its median best-at-30 is not below the lowest best-at-30
of TPE's seeds.

The LLM analyst joins when ``HPO_LLM_BASE_URL`` and ``HPO_LLM_MODEL`` name an OpenAI-compatible
endpoint (``HPO_LLM_API_KEY_ENV``: the name of the variable holding its key, if any). Its
analyses run inline too, so each one blocks its study: with SmolLM2 on a 2-core CPU (minutes per
analysis) that adds hours; use a fast endpoint.

All studies are kept in one SQLite file (``runs/bench/sampler/sampler.db``) and shown with
``hpo compare`` (seeds grouped per sampler: median + min-max band); the command is in the JSON.

    python -m benchmarks.bench_sampler --quick          # 2 seeds x 3 trials, 1 epoch
    python -m benchmarks.bench_sampler                  # 5 seeds x 30 trials
"""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Any

from benchmarks.common import (
    REPO,
    check,
    default_jobs,
    fmt_spread,
    median_spread,
    results_dir,
    run_jobs,
    table,
    work_dir,
    write_result,
)

sys.path.insert(0, str(REPO / "tests"))
from llm_server import env_endpoint  # the endpoint's environment, as the other LLM benchmarks

MODEL = {"name": "test_efficientnet", "image_size": 16}


def samplers(quick: bool) -> dict[str, dict[str, Any]]:
    """label -> (study-name slug, sampler config); the LLM analyst only with an endpoint."""
    startup, every = (2, 2) if quick else (8, 5)
    out = {
        "random": {"slug": "random", "sampler": {"type": "random"}},
        "tpe": {"slug": "tpe", "sampler": {"type": "tpe", "n_startup_trials": startup}},
        "llm-tpe (rules)": {"slug": "llmtpe", "sampler": {
            "type": "llm-tpe", "n_startup_trials": startup, "analyst": "rules",
            "every_n_trials": every, "background": False}},
    }
    endpoint = llm_endpoint()
    if endpoint:
        out["llm-tpe (LLM)"] = {"slug": "llm", "sampler": {
            "type": "llm-tpe", "n_startup_trials": startup, "analyst": "llm",
            "every_n_trials": every, "background": False, "llm": endpoint}}
    return out


def llm_endpoint() -> dict[str, Any] | None:
    """The endpoint from ``HPO_LLM_BASE_URL`` / ``HPO_LLM_MODEL`` (/ ``HPO_LLM_API_KEY_ENV``)."""
    configured = env_endpoint()
    return {**configured, "timeout": 300, "max_retries": 1} if configured else None


def best_so_far(trials: list[dict], maximize: bool = True) -> list[float | None]:
    """Best complete value after each finished trial, in the order they finished."""
    done = sorted((t for t in trials if t["state"] in ("COMPLETE", "PRUNED", "FAIL")),
                  key=lambda t: (t["end"] or 0, t["number"]))
    out, best = [], None
    for t in done:
        if t["state"] == "COMPLETE" and t["value"] is not None and (
                best is None or (t["value"] > best if maximize else t["value"] < best)):
            best = t["value"]
        out.append(best)
    return out


def run(quick: bool, seeds: list[int], n_trials: int, max_epochs: int, jobs: int) -> dict:
    tmp = work_dir("sampler")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    db = tmp / "sampler.db"
    url = f"sqlite:///{db}"
    table_of = samplers(quick)
    specs = []
    for seed in seeds:
        for label, s in table_of.items():
            specs.append({"base": "mobilenet", "name": f"sampler-{s['slug']}-s{seed}", "url": url,
                          "workdir": str(tmp), "threads": 1, "label": label, "seed": seed,
                          "overrides": {"seed": seed, "sampler": s["sampler"], "model": MODEL,
                                        "budget": {"n_trials": n_trials, "max_epochs": max_epochs},
                                        "artifacts": {"path": str(tmp / "artifacts")}}})
    results = run_jobs(specs, jobs)
    shutil.rmtree(tmp / "artifacts", ignore_errors=True)
    runs = []
    for spec, res in zip(specs, results, strict=True):
        runs.append({"sampler": spec["label"], "seed": spec["seed"], "study": spec["name"],
                     "curve": best_so_far(res["trials"]), "seconds": res["seconds"],
                     "epochs": sum(t["epochs"] for t in res["trials"]),
                     "proposal_trials": sum(t["source"] in ("rules", "llm") for t in res["trials"]),
                     "analyses": res["analyses"]})

    marks = sorted({max(1, n_trials // 3), max(1, 2 * n_trials // 3), n_trials})
    reach_target = max(1, n_trials // 2)
    summary: dict[str, Any] = {}
    for label in table_of:
        mine = [r for r in runs if r["sampler"] == label]
        s: dict[str, Any] = {f"best@{m}": median_spread([r["curve"][m - 1] or 0.0 for r in mine
                                                         if len(r["curve"]) >= m]) for m in marks}
        reach = []
        for r in mine:
            tpe = next(x for x in runs if x["sampler"] == "tpe" and x["seed"] == r["seed"])
            goal = tpe["curve"][-1] if tpe["curve"] else None
            reach.append(next((i + 1 for i, v in enumerate(r["curve"]) if v is not None
                               and goal is not None and v >= goal), n_trials + 1))
        s["trials_to_tpe_best"] = median_spread(reach)
        s["trials_to_tpe_best_per_seed"] = reach
        s["reached"] = sum(n <= n_trials for n in reach)
        s["seeds"] = len(mine)
        s["proposal_trials"] = median_spread([r["proposal_trials"] for r in mine])
        s["epochs"] = median_spread([r["epochs"] for r in mine])
        analyses = [a for r in mine for a in r["analyses"]]
        s["analyses"] = len(analyses)
        s["llm_fallbacks"] = sum(bool(a.get("fallback_reason")) for a in analyses)
        summary[label] = s

    last = f"best@{n_trials}"
    tpe_at_end = summary["tpe"][last]
    checks = []
    for label in [k for k in table_of if k.startswith("llm-tpe")]:
        s = summary[label]
        fast = s["trials_to_tpe_best"]["median"] <= reach_target
        not_worse = s[last]["median"] >= tpe_at_end["min"]
        s["passed_reach"], s["passed_not_worse"] = fast, not_worse
        checks.append(check(f"{label}: trials to TPE's best@{n_trials}",
                            s["trials_to_tpe_best"]["median"], f"<= {reach_target}", fast))
        checks.append(check(f"{label}: median best@{n_trials} vs TPE's lowest seed",
                            round(s[last]["median"] - tpe_at_end["min"], 5), ">= 0", not_worse))

    rows = []
    for label, s in summary.items():
        cells = [fmt_spread(s[f"best@{m}"], "{:.4f}") for m in marks]
        reached = (f"{s['trials_to_tpe_best']['median']:g} ({s['trials_to_tpe_best']['min']:g}-"
                   f"{s['trials_to_tpe_best']['max']:g}), reached {s['reached']}/{s['seeds']}")
        if label.startswith("llm-tpe"):
            target = f"<= {reach_target} trials; best@{n_trials} >= TPE's lowest seed"
            misses = [w for w, ok in (("trials", s["passed_reach"]),
                                      ("best", s["passed_not_worse"])) if not ok]
            result = "MISS (" + ", ".join(misses) + ")" if misses else "pass"
        else:
            target, result = "", "(reference)"
        rows.append([label, *cells, reached, fmt_spread(s["proposal_trials"], "{:.0f}"), target,
                     result])
    md = table(["sampler"] + [f"best val acc after {m} (median, min-max)" for m in marks]
               + [f"trials to TPE's best@{n_trials} (median, min-max)", "proposal trials",
                  "target", "result"], rows)
    md += (f"\n\n{len(seeds)} seeds per sampler, {n_trials} trials of at most {max_epochs} "
           "epochs; \"never\" counts as " f"{n_trials + 1}.")
    if not llm_endpoint():
        md += " LLM analyst: not run (set HPO_LLM_BASE_URL and HPO_LLM_MODEL)."

    compare = present(url, table_of)
    if compare.get("markdown"):
        md += f"\n\n`hpo compare`: `{compare['command']}` (HTML: `{compare['html']}`)."
    return {"title": "Sampler efficiency (mobilenet digits study, test_efficientnet 16 px): "
                     "random vs TPE vs llm-tpe",
            "target": f"llm-tpe reaches TPE's best@{n_trials} in <= {reach_target} trials and its "
                      f"median best@{n_trials} is not below TPE's lowest seed",
            "table_md": md,
            "settings": {"seeds": seeds, "n_trials": n_trials, "max_epochs": max_epochs,
                         "model": MODEL, "dataset": "digits", "pruner": "median (study default)",
                         "samplers": {k: v["sampler"] for k, v in table_of.items()},
                         "llm_endpoint": bool(llm_endpoint()), "jobs": jobs, "threads_per_job": 1,
                         "storage": url},
            "marks": marks, "summary": summary, "runs": runs, "compare": compare,
            "checks": checks, "passed": all(c["passed"] for c in checks)}


def present(url: str, table_of: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The same studies through ``hpo compare`` (seeds grouped per sampler)."""
    from hpo.report.compare import build_compare

    groups = [f"{v['slug']}=sampler-{v['slug']}-s*" for v in table_of.values()]
    command = ("hpo compare " + " ".join(f"--group '{g}'" for g in groups)
               + f" --storage {url} --name sampler_compare")
    try:
        rep = build_compare([], url, groups=groups, out_dir=work_dir("sampler") / "report",
                            out_name="sampler_compare")
    except Exception as exc:  # noqa: BLE001 - the table above stands without the HTML
        return {"command": command, "error": f"{type(exc).__name__}: {exc}"}
    md_copy = results_dir() / "sampler_compare.md"
    md_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rep.markdown, md_copy)
    return {"command": command, "html": str(rep.html), "markdown": str(md_copy),
            "groups": rep.summary.get("groups", [])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, help="default 5 (quick: 2)")
    parser.add_argument("--n-trials", type=int, help="default 30 (quick: 3)")
    parser.add_argument("--max-epochs", type=int, help="default 4 (quick: 1)")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="studies in parallel")
    args = parser.parse_args(argv)
    for key, full, quick in (("seeds", 5, 2), ("n_trials", 30, 3), ("max_epochs", 4, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.quick:  # in this process: spawning workers costs more than the studies
        args.jobs = 1
    result = run(args.quick, list(range(args.seeds)), args.n_trials, args.max_epochs, args.jobs)
    print(result["table_md"])
    print("wrote", write_result("sampler", result, args.quick))


if __name__ == "__main__":
    main()
