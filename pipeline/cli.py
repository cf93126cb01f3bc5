"""The ``mmqrec`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from recdata.errors import DataError
from recdata.layout import layout
from recdata.threads import apply_threads, set_env_defaults

log = logging.getLogger("mmqrec")


def _setup_logging(verbose: bool, run_dir: Path | None = None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "matplotlib", "PIL", "filelock", "httpx", "huggingface_hub", "transformers", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if run_dir is not None:
        layout(run_dir).logs_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(layout(run_dir).logs_dir / "mmqrec.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from recdata.registry import load_dataset

    dataset = load_dataset(name=args.dataset, data_root=args.data_root, path=args.path)
    stats = dataset.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"dataset            {stats['dataset']}")
        for key in ("users", "items", "interactions", "items_with_text", "items_with_image"):
            print(f"{key:<18} {stats[key]:,}")
        if stats["skipped"]:
            print("skipped / repaired:")
            for reason, n in stats["skipped"].items():
                print(f"  {reason:<40} {n:,}")
        for warning in stats["warnings"]:
            print(f"note: {warning}")
    return 0


def _load_cfg(args: argparse.Namespace):
    from pipeline.config import load_config

    overrides = list(args.set or [])
    if getattr(args, "data_root", None):
        overrides.append(f"data.data_root={args.data_root}")
    return load_config(args.config, overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.stages import run_pipeline

    run_dir = Path(args.out)
    _setup_logging(args.verbose, run_dir)
    apply_threads(requested=args.threads, role="train")
    cfg = _load_cfg(args)
    t0 = time.perf_counter()
    outcome = run_pipeline(cfg=cfg, run_dir=run_dir, from_stage=args.from_stage, until_stage=args.until)
    for name, what in outcome:
        print(f"{name:<16} {what}")
    report = layout(run_dir).report_dir / "report.md"
    print(f"done in {time.perf_counter() - t0:.0f} s; run directory: {run_dir}")
    if report.exists():
        print(f"report: {report}")
    return 0


def _make_stage_command(stage_name: str):
    def command(args: argparse.Namespace) -> int:
        from pipeline.stages import run_pipeline

        run_dir = Path(args.run_dir)
        _setup_logging(args.verbose, run_dir)
        apply_threads(requested=args.threads, role="train")
        cfg = _load_cfg(args)
        for name, what in run_pipeline(cfg=cfg, run_dir=run_dir, from_stage=stage_name, until_stage=stage_name):
            print(f"{name:<16} {what}")
        return 0

    return command


def _cmd_recommend(args: argparse.Namespace) -> int:
    from mmqrec import Recommender, format_table

    if args.all or args.users:
        from mmqrec.export import export_recommendations

        if not args.out:
            raise DataError("--all / --users need --out FILE.parquet")
        apply_threads(requested=args.threads, role="serve")
        summary = export_recommendations(
            run_dir=Path(args.run_dir), out=Path(args.out), k=args.k,
            users_file=Path(args.users) if args.users else None, exclude_seen=not args.keep_seen,
            chunk_size=args.chunk_size, device=args.device, workers=args.workers)
        print(json.dumps(summary, indent=2))
        return 0
    if args.user is None and not args.history:
        raise DataError("give --user ID, --history ITEM [ITEM ...], or --all --out FILE")
    apply_threads(requested=args.threads, role="serve")
    t0 = time.perf_counter()
    rec = Recommender.load(args.run_dir, device=args.device, variant=args.variant)
    if args.history:
        result = rec.recommend_history(args.history, k=args.k, exclude_seen=not args.keep_seen,
                                       user_id=args.user)
    else:
        result = rec.recommend([str(args.user)], k=args.k, exclude_seen=not args.keep_seen)[0]
    elapsed = time.perf_counter() - t0
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(format_table(result))
        print(f"({elapsed:.2f} s)")
    return 0


def _cmd_add_items(args: argparse.Namespace) -> int:
    from mmqrec.catalogue import add_items

    apply_threads(requested=args.threads, role="train")
    summary = add_items(run_dir=Path(args.run_dir), items_file=Path(args.items_file),
                        device=args.device, images_outside_folder=args.images_outside_folder)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from mmqrec.server import serve

    serve(run_dir=Path(args.run_dir), host=args.host, port=args.port, device=args.device,
          variant=args.variant, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
          threads=args.threads, workers=args.workers)
    return 0


def _cmd_report_compare(args: argparse.Namespace) -> int:
    from eval.compare import compare_runs

    text = compare_runs(run_a=Path(args.run_a), run_b=Path(args.run_b), out=Path(args.out) if args.out else None)
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pipeline.stages import STAGES, STAGE_NAMES

    parser = argparse.ArgumentParser(
        prog="mmqrec",
        description="Generative recommendation with multimodal semantic IDs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    stats = data_sub.add_parser("stats", help="counts after loading and cleaning a dataset")
    stats.add_argument("--dataset", required=True, help="ml-100k-mm, ml-1m-mm, amazon-beauty, custom, synthetic")
    stats.add_argument("--data-root", help="folder with the datasets (default: $MMQREC_DATA, else ../shared/data)")
    stats.add_argument("--path", help="folder of your tables for --dataset custom")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=_cmd_data_stats)

    def add_threads_arg(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument("--threads", type=int, metavar="N",
                       help=f"torch CPU threads (default: $OMP_NUM_THREADS when set, else {default})")

    train_threads = ("the cores not busy with other processes when the command starts; the count "
                     "moves results in their last bits, so fix it for bit-identical reruns")
    serve_threads = "1 per model worker: parallelism comes from serving requests side by side"

    def add_config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. tokenizer.codebook_size=128 (repeatable)")
        p.add_argument("--data-root", help="folder with the datasets")

    run = sub.add_parser("run", help="run every stage, skipping those that are up to date")
    run.add_argument("config", help="YAML config (see configs/)")
    run.add_argument("--out", required=True, help="run directory")
    run.add_argument("--from", dest="from_stage", choices=STAGE_NAMES, help="redo this stage and all later ones")
    run.add_argument("--until", choices=STAGE_NAMES, help="stop after this stage")
    add_config_args(run)
    add_threads_arg(run, train_threads)
    run.set_defaults(func=_cmd_run)

    for stage in STAGES:
        if stage.name == "data":
            continue
        p = sub.add_parser(stage.name, help=f"one stage: {stage.description} (earlier stages run if missing)")
        p.add_argument("config", help="YAML config")
        p.add_argument("run_dir", help="run directory")
        add_config_args(p)
        add_threads_arg(p, train_threads)
        p.set_defaults(func=_make_stage_command(stage.name))

    rec = sub.add_parser("recommend", help="top-k recommendations from a trained run: one user, an "
                         "ad-hoc history, or every user to a parquet file")
    rec.add_argument("run_dir")
    rec.add_argument("--user", help="the user's id as in the dataset")
    rec.add_argument("--history", nargs="+", metavar="ITEM",
                     help="an ad-hoc history of item ids, oldest first (with --user: ranked as that user)")
    rec.add_argument("--all", action="store_true", help="every user of the run (needs --out)")
    rec.add_argument("--users", metavar="FILE", help="a text file of user ids, one per line (needs --out)")
    rec.add_argument("--out", metavar="FILE.parquet", help="batch export: one row per (user, rank)")
    rec.add_argument("--chunk-size", type=int, default=256, help="users per batch of the export")
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--variant", help="ranker variant (default: the one the ranker stage serves)")
    rec.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    rec.add_argument("--keep-seen", action="store_true", help="do not exclude items the user has already seen")
    rec.add_argument("--json", action="store_true")
    add_threads_arg(rec, serve_threads)
    rec.add_argument("--workers", type=int, metavar="N",
                     help="export chunks recommended side by side (default: one per usable core)")
    rec.set_defaults(func=_cmd_recommend)

    add = sub.add_parser("add-items", help="give new items semantic IDs and add them to a trained "
                         "run without retraining")
    add.add_argument("run_dir")
    add.add_argument("items_file", help="items table like a custom dataset's items.csv (item_id, "
                     "text columns, optional image)")
    add.add_argument("--device", default="cpu", help="device of the encoders (cpu, cuda, cuda:N)")
    add.add_argument("--images-outside-folder", action="store_true",
                     help="accept image paths outside the items file's folder")
    add_threads_arg(add, train_threads)
    add.set_defaults(func=_cmd_add_items)

    srv = sub.add_parser("serve", help="HTTP service and web page over a trained run")
    srv.add_argument("run_dir")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    srv.add_argument("--variant", help="ranker variant (default: the one the ranker stage serves)")
    srv.add_argument("--max-batch", type=int, default=64, help="most requests batched into one model call")
    srv.add_argument("--max-wait-ms", type=float, default=5.0,
                     help="how long a request waits for others to batch with")
    add_threads_arg(srv, serve_threads)
    srv.add_argument("--workers", type=int, metavar="N",
                     help="model calls served side by side (default: one per usable core)")
    srv.set_defaults(func=_cmd_serve)

    report = sub.add_parser("report", help="reports")
    report_sub = report.add_subparsers(dest="report_command", required=True, metavar="SUBCOMMAND")
    compare = report_sub.add_parser("compare", help="put two runs side by side")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("--out", help="also write the comparison to this markdown file")
    compare.set_defaults(func=_cmd_report_compare)
    return parser


# Commands whose model calls are small and many: their waiting OpenMP threads sleep.
SERVING_COMMANDS = ("recommend", "serve")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    # Before anything imports torch (parsing does not): OpenMP reads its wait policy once, when
    # it loads. Training keeps OpenMP's spinning waits: on an idle machine they made a two-thread
    # retriever step 1.6 times faster than sleeping ones, and on a busy one training takes one
    # thread, where the policy does not matter (benchmarks/train_step_busy.py).
    if args.command in SERVING_COMMANDS:
        set_env_defaults()
    # Every command logs to stderr; `run` and the stage commands add the run's log file.
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except DataError as exc:
        print(f"mmqrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmqrec: interrupted; finished artefacts are kept and the run can be resumed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
