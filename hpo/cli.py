"""Command line: ``hpo study NAME``. Thin: parse, call the library, map errors to exit codes.

Exit codes: 0 ok, 1 runtime error, 2 bad configuration or input, 75 storage unreachable (try
again later: :class:`~hpo.errors.StorageUnavailable`), 130/143 interrupted.

    $ hpo study mobilenet --storage sqlite:///runs/hpo.db
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from hpo.errors import HpoError

USAGE_DESCRIPTION = """\
hpo searches hyperparameters of PyTorch/timm image classifiers with Optuna: a study file
(studies/NAME.yaml) names the data, the model, the search space and the budget; trials, reports
and analyses live in one storage (SQLite by default, PostgreSQL/MySQL to share between machines)."""

USAGE_EPILOG = """\
exit codes:
  0    success
  1    runtime error (a migration or analysis that failed, an unexpected error)
  2    bad configuration or input (study file, model name, data set, command-line value,
       a storage or study that does not exist)
  3    hpo analyze: the LLM analyst was asked for and did not answer (the rule-based
       analysis was printed instead)
  75   storage (PostgreSQL/MySQL, or the storage proxy of a grpc:// URL) unreachable for
       longer than workers.outage_limit_s, or not answering at start: try again later; a
       running trial is left for retry
  130  interrupted (Ctrl-C); 143 stopped by SIGTERM

examples:
  hpo study mobilenet                 run (or continue) studies/mobilenet.yaml
  hpo report mobilenet                write runs/reports/mobilenet.html and .md
  hpo dashboard                       browse every study in the storage

`hpo COMMAND --help` shows a command's options; README.md has the study file format and guides.
Read-only commands (report, compare, analyze --dry-run, dashboard) never create a storage."""


def _storage_url(args: argparse.Namespace) -> str:
    """``--storage`` / ``--storage-file`` / ``$HPO_STORAGE`` / the default, ``${VAR}`` expanded
    (:func:`hpo.storage.resolve_storage_url`); a password on the command line gets a warning."""
    from hpo.storage import resolve_storage_url

    return resolve_storage_url(args.storage, file=args.storage_file, from_argv=True)


def _cmd_study(args: argparse.Namespace) -> int:
    from hpo.config import load_study
    from hpo.runner import run_study

    cfg = load_study(args.name)
    url = _storage_url(args)
    run_study(cfg, url, n_trials=args.n_trials, timeout=args.timeout,
              show_progress=not args.no_progress, artifacts=args.artifacts,
              threads=args.threads, force=args.force)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from hpo.runner import join_study

    join_study(args.name, _storage_url(args), artifacts=args.artifacts, n_trials=args.n_trials,
               timeout=args.timeout, show_progress=not args.no_progress,
               threads=args.threads, force=args.force)
    return 0


def _cmd_storage_proxy(args: argparse.Namespace) -> int:
    from hpo.proxy_server import serve

    serve(_storage_url(args), host=args.host, port=args.port,
          echo=lambda line: print(line, flush=True))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from hpo.status import show_status

    show_status(args.name, _storage_url(args), watch=args.watch)
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from hpo.migrate import migrate_study
    from hpo.storage import resolve_storage_url

    src = resolve_storage_url(args.from_url, file=args.from_file, option="--from",
                              env="HPO_MIGRATE_FROM", default=None, from_argv=True)
    dst = resolve_storage_url(args.to_url, file=args.to_file, option="--to",
                              env="HPO_MIGRATE_TO", default=None, from_argv=True)
    print(migrate_study(args.name, src, dst))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpo.report import build_report

    url = _storage_url(args)
    rep = build_report(args.name, url, out_dir=Path(args.out), top_k=args.top_k)
    print(f"wrote {rep.html}, {rep.markdown} and {rep.csv}")
    if args.tensorboard:
        from hpo.report.tensorboard import export_tensorboard

        print(f"wrote TensorBoard event files under {export_tensorboard(args.name, url)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpo.report.compare import build_compare

    url = _storage_url(args)
    rep = build_compare(args.names, url, groups=args.group, out_dir=Path(args.out),
                        out_name=args.name, log_x=args.log_x)
    print(f"wrote {rep.html} and {rep.markdown}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpo.export.bundle import export_bundle

    export_bundle(args.name, _storage_url(args), Path(args.out), trial=args.trial,
                  artifacts=args.artifacts, refit=args.refit, pick=args.pick)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from hpo.export.predict import run

    done, failed = run(args.bundle, args.images, args.out)
    print(f"predicted {done} image(s)" + (f", {failed} unreadable (see the error column)"
                                          if failed else "")
          + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from hpo.export.evaluate import evaluate_study

    results = evaluate_study(args.name, _storage_url(args), top=args.top,
                             artifacts=args.artifacts)
    return 0 if results else 1


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from hpo.dashboard import serve

    return serve(_storage_url(args), port=args.port, host=args.host,
                 artifacts=args.artifacts, read_only=args.read_only)


def _cmd_analyze(args: argparse.Namespace) -> int:
    import optuna

    from hpo.config import load_study
    from hpo.errors import HpoError
    from hpo.sampler.llm_tpe import analyze_study
    from hpo.sampler.notes import format_analysis
    from hpo.storage import open_existing_storage

    cfg = load_study(args.name)
    url = _storage_url(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:  # the study must exist: a mistyped SQLite path creates nothing
        study = optuna.load_study(study_name=cfg.name, storage=open_existing_storage(url))
    except KeyError:
        raise StudyNotFound(f"no study {cfg.name!r} in the storage; run `hpo study {cfg.name}` "
                            "first") from None
    options = cfg.sampler.model_copy(update={"analyst": args.analyst} if args.analyst else {})
    if options.resolved_analyst() == "llm" and options.llm is None:
        raise HpoError("--analyst llm needs an llm: section under sampler: in the study file")
    # --dry-run writes nothing at all: no analysis, ledger entry, cached reply, note or trial
    analysis = analyze_study(study, cfg.space, options, seed=cfg.seed,
                             description=cfg.description, dry_run=args.dry_run)
    print(analysis.model_dump_json(indent=2) if args.json
          else format_analysis(analysis.model_dump(mode="json")))
    if args.dry_run:
        print("dry run: nothing was stored or enqueued" + (
            " (an LLM request made now is not in the ledger)"
            if options.resolved_analyst() == "llm" else ""), file=sys.stderr)
    if options.resolved_analyst() == "llm" and analysis.analyst != "llm":
        print(f"hpo: the LLM analyst did not answer ({analysis.fallback_reason}); the rule-based "
              f"analysis above was printed instead (exit {ANALYST_FELL_BACK})", file=sys.stderr)
        return ANALYST_FELL_BACK
    return 0


class StudyNotFound(HpoError):
    """``hpo analyze``: the storage has no such study (bad input: exit 2)."""

    exit_code = 2


# `hpo analyze`: the LLM analyst was asked for (--analyst llm, or the study's sampler.analyst)
# and did not answer; the rule-based analysis was printed (and stored, without --dry-run)
ANALYST_FELL_BACK = 3


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a bad value exits 2 with argparse's message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid; allowed: an integer >= 1")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is invalid; allowed: a number of seconds > 0")
    return value


STORAGE_HELP = ("storage URL; ${VAR} in it is taken from the environment, @PATH reads it from a "
                "file (default: $HPO_STORAGE or sqlite:///runs/hpo.db). A password written here "
                "is visible in ps: use $HPO_STORAGE, --storage-file or ${VAR}")
STORAGE_FILE_HELP = ("read the storage URL from the first line of PATH, a file readable by its "
                     "owner only (chmod 600)")
FORCE_HELP = "run a study that `hpo migrate` moved elsewhere (continue this copy anyway)"


def _storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument("--storage-file", metavar="PATH", help=STORAGE_FILE_HELP)


THREADS_HELP = ("torch CPU threads for training (default: $HPO_THREADS, workers.threads in the "
                "study file, else the cores shared by the hpo processes training on this machine)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description=USAGE_DESCRIPTION,
                                     epilog=USAGE_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="COMMAND")

    study = sub.add_parser("study", help="run or continue the study in studies/NAME.yaml")
    study.add_argument("name", help="study name (studies/NAME.yaml) or a path to a study file")
    _storage_args(study)
    study.add_argument("--force", action="store_true", help=FORCE_HELP)
    study.add_argument("--n-trials", type=_positive_int,
                       help="finished trials to reach, >= 1 (default: budget.n_trials)")
    study.add_argument("--timeout", type=_positive_float, help="seconds for this run (> 0)")
    study.add_argument("--no-progress", action="store_true", help="no progress bar")
    study.add_argument("--threads", type=_positive_int, help=THREADS_HELP)
    study.add_argument("--artifacts", help="checkpoint store: a folder or s3://BUCKET "
                       "(default: $HPO_ARTIFACTS, the study's artifacts.path, or artifacts/ "
                       "next to the SQLite file)")
    study.set_defaults(func=_cmd_study)

    analyze = sub.add_parser("analyze", epilog="exit 3: the LLM analyst was asked for and did "
                             "not answer; the rule-based analysis was printed instead",
                             help="run one analysis of study NAME now, print it and "
                             "enqueue its proposals (LLM or rule-based analyst)")
    analyze.add_argument("name", help="study name (studies/NAME.yaml) or a path to a study file")
    _storage_args(analyze)
    analyze.add_argument("--analyst", choices=["rules", "llm"], help="override sampler.analyst")
    analyze.add_argument("--dry-run", action="store_true", help="print only: store nothing, "
                         "enqueue nothing (an LLM request is still made, not recorded)")
    analyze.add_argument("--json", action="store_true", help="print the stored JSON")
    analyze.set_defaults(func=_cmd_analyze)

    worker = sub.add_parser("worker", help="join study NAME in a shared storage (config is "
                            "read from the storage; a differing local studies/NAME.yaml refuses)")
    worker.add_argument("name", help="study name in the storage")
    _storage_args(worker)
    worker.add_argument("--force", action="store_true", help=FORCE_HELP)
    worker.add_argument("--artifacts", help="checkpoint store shared by the workers: a folder or "
                        "s3://BUCKET (default: as for `hpo study`)")
    worker.add_argument("--n-trials", type=_positive_int,
                        help="finished trials to reach, >= 1 (default: budget.n_trials)")
    worker.add_argument("--timeout", type=_positive_float, help="seconds for this worker (> 0)")
    worker.add_argument("--no-progress", action="store_true", help="no progress bar")
    worker.add_argument("--threads", type=_positive_int, help=THREADS_HELP)
    worker.set_defaults(func=_cmd_worker)

    migrate = sub.add_parser("migrate", help="copy study NAME (trials, attrs, analyses, notes) "
                             "to another storage, e.g. SQLite -> PostgreSQL")
    migrate.add_argument("name", help="study name")
    migrate.add_argument("--from", dest="from_url", help="source storage URL (or @PATH; "
                         "${VAR} from the environment; default: $HPO_MIGRATE_FROM)")
    migrate.add_argument("--from-file", metavar="PATH", help="read the source URL from PATH "
                         "(chmod 600)")
    migrate.add_argument("--to", dest="to_url", help="destination storage URL (or @PATH; "
                         "${VAR} from the environment; default: $HPO_MIGRATE_TO)")
    migrate.add_argument("--to-file", metavar="PATH", help="read the destination URL from PATH "
                         "(chmod 600)")
    migrate.set_defaults(func=_cmd_migrate)

    report = sub.add_parser("report", help="write runs/reports/NAME.html (self-contained) and NAME.md")
    report.add_argument("name", help="study name in the storage")
    _storage_args(report)
    report.add_argument("--out", default="runs/reports", help="output folder (default: runs/reports)")
    report.add_argument("--top-k", type=int, default=10, help="rows of the top trials table")
    report.add_argument("--tensorboard", action="store_true",
                        help="also export each trial's curves to runs/tensorboard/NAME/trial-N")
    report.set_defaults(func=_cmd_report)

    compare = sub.add_parser("compare", help="compare studies side by side (HTML + Markdown)")
    compare.add_argument("names", nargs="*", help="study names (globs allowed)")
    compare.add_argument("--group", action="append", default=[], metavar="LABEL=GLOB",
                         help="repeated studies drawn as median + band, e.g. tpe=tpe-s*")
    _storage_args(compare)
    compare.add_argument("--out", default="runs/reports", help="output folder (default: runs/reports)")
    compare.add_argument("--name", help="output file stem (default: compare-<studies>)")
    compare.add_argument("--log-x", action="store_true",
                         help="draw the x axes (trials, epochs, wall time) on a log scale")
    compare.set_defaults(func=_cmd_compare)

    export = sub.add_parser("export", help="write a trial as a bundle: safetensors, ONNX "
                            "(checked with onnxruntime), metadata.json, MODEL_CARD.md")
    export.add_argument("name", help="study name in the storage")
    _storage_args(export)
    export.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    export.add_argument("--pick", metavar="RULE", help="multi-objective study: which Pareto "
                        "trial, fastest-within:X (default X=1: the lowest latency within 1 "
                        "point of the front's best), smallest-within:X or best")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.add_argument("--refit", action="store_true", help="first train the trial's params "
                        "again on train + validation for its epoch count, and export that")
    export.add_argument("--artifacts", help="checkpoint store (default: as for `hpo study`)")
    export.set_defaults(func=_cmd_export)

    predict = sub.add_parser("predict", help="classify images with an exported bundle "
                             "(onnxruntime, no torch); CSV with a row per file")
    predict.add_argument("bundle", help="bundle folder (from hpo export) or its model.onnx")
    predict.add_argument("images", nargs="+", help="image files or folders (recursive)")
    predict.add_argument("--out", help="CSV file to write (default: standard output)")
    predict.set_defaults(func=_cmd_predict)

    evaluate = sub.add_parser("evaluate", help="score the best trial(s) of study NAME on its "
                              "held-out test split (accuracy, macro-F1 with 95%% intervals, "
                              "per class, confusion) and store the result")
    evaluate.add_argument("name", help="study name in the storage")
    _storage_args(evaluate)
    evaluate.add_argument("--top", type=_positive_int, default=1,
                          help="evaluate the K best completed trials (default: 1)")
    evaluate.add_argument("--artifacts", help="checkpoint store (default: where the study "
                          "recorded its checkpoints)")
    evaluate.set_defaults(func=_cmd_evaluate)

    dash = sub.add_parser("dashboard", help="optuna-dashboard on the storage, analyses as notes")
    _storage_args(dash)
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    dash.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    dash.add_argument("--artifacts", help="artifact folder (default: $HPO_ARTIFACTS or "
                      "artifacts/ next to the SQLite file)")
    dash.add_argument("--read-only", action="store_true",
                      help="refuse every change (delete, rename, notes, ...) and write nothing")
    dash.set_defaults(func=_cmd_dashboard)

    proxy = sub.add_parser("storage-proxy", help="serve the storage to workers through Optuna's "
                           "gRPC proxy (workers: --storage grpc://HOST:PORT)")
    _storage_args(proxy)
    proxy.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1; "
                       "the proxy has no TLS and no auth: see README)")
    proxy.add_argument("--port", type=int, default=13000, help="port (default: 13000)")
    proxy.set_defaults(func=_cmd_storage_proxy)

    status = sub.add_parser("status", help="what study NAME's workers are doing: running, stale "
                            "and queued trials, counts, best, time left")
    status.add_argument("name")
    _storage_args(status)
    status.add_argument("--watch", nargs="?", type=_positive_float, const=10.0, metavar="SECONDS",
                        help="redraw every SECONDS (default 10) until Ctrl-C")
    status.set_defaults(func=_cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HpoError as exc:
        print(f"hpo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # hpo.signals.Interrupted carries 130 (INT) or 143 (TERM)
        print("hpo: interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except Exception as exc:  # a database outage outside hpo.storage_retry: 75, one line
        from hpo.storage_retry import describe, is_outage

        if not is_outage(exc):
            raise
        print(f"hpo: error: storage unreachable ({describe(exc)}); try again later",
              file=sys.stderr)
        return 75


if __name__ == "__main__":
    sys.exit(main())
