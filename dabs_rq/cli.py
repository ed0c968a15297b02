"""Command line: ``dabs-rq [hydra overrides]`` runs jobs; ``dabs-rq table`` rebuilds the table;
``dabs-rq ablation <name>`` summarises an ablation sweep;
``dabs-rq data status`` lists the datasets and whether they are on disk; ``dabs-rq bench`` runs
the speed benchmarks."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from dabs_rq.data.storage import CorruptDataError, DatasetMissingError
from dabs_rq.errors import UserError

#: What becomes one line and exit status 2: a user's mistake in config or data (``UserError``), a
#: dataset that is not on disk, a corrupt data file (named, with the ``on_corrupt=skip`` way out).
#: Anything else is a bug or a fault and keeps its traceback.
USER_ERRORS = (UserError, DatasetMissingError, CorruptDataError)


def table_main(argv: list[str]) -> int:
    from dabs_rq.readme import inject_block
    from dabs_rq.results.table import build_table, resolve_results_dir

    parser = argparse.ArgumentParser(
        prog="dabs-rq table",
        description="Rebuild the results table from records: one section per (experiment, protocol fingerprint); "
        "records of different protocols or settings are never averaged together.",
    )
    parser.add_argument(
        "results_dirs",
        nargs="*",
        type=Path,
        help="folders holding records/ (default: $DABS_RQ_RESULTS, else results/local/)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write table.{md,csv,png} (default: first folder)"
    )
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also put the Markdown table between the TABLE START/END markers of this file",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also write table_reference.md: the paper's whole Table 1 (34 rows) with our cells "
        "from records of protocol 'dabs', empty where nothing was run",
    )
    args = parser.parse_args(argv)
    dirs = args.results_dirs or [resolve_results_dir(None)]
    try:
        paths = build_table(dirs, args.out, reference=args.reference)
        if args.readme:
            inject_block(args.readme, "TABLE", paths["md"].read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError) as err:
        print(f"dabs-rq table: {err}", file=sys.stderr)
        return 2
    print(f"Results table: {paths['md']}\n  (also {paths['csv'].name} and {paths['png'].name} beside it)")
    if "reference" in paths:
        print(f"Paper Table 1 with our cells: {paths['reference']}")
    return 0


def ablation_main(argv: list[str]) -> int:
    from dabs_rq.paths import results_subdir
    from dabs_rq.results.ablation import build_ablation

    parser = argparse.ArgumentParser(
        prog="dabs-rq ablation", description="Summarise an ablation sweep: metric vs the swept setting."
    )
    parser.add_argument("name", help="the ablation (e.g. ablation_bins; its records are under records/<name>/)")
    parser.add_argument(
        "--setting",
        default=None,
        help="the swept key of algorithm_settings (default: from conf/experiment/<name>.yaml)",
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="folder holding records/ (default: results/ablations)"
    )
    args = parser.parse_args(argv)
    setting = args.setting
    if setting is None:
        from omegaconf import OmegaConf

        from dabs_rq.paths import CONF_DIR

        path = CONF_DIR / "experiment" / f"{args.name}.yaml"
        if not path.exists():
            valid = sorted(p.stem for p in (CONF_DIR / "experiment").glob("ablation_*.yaml"))
            print(
                f"dabs-rq ablation: unknown ablation {args.name!r}; valid: {', '.join(valid)} (or give --setting)",
                file=sys.stderr,
            )
            return 2
        setting = str(OmegaConf.load(path).ablation.setting)
    try:
        paths = build_ablation(args.results or Path(results_subdir("ablations")), args.name, setting)
    except (FileNotFoundError, ValueError) as err:
        print(f"dabs-rq ablation: {err}", file=sys.stderr)
        return 2
    print(f"Ablation summary: {paths['md']}\n  (also {paths['csv'].name} and {paths['png'].name} beside it)")
    return 0


def data_main(argv: list[str]) -> int:
    from dabs_rq.data import domains, storage

    parser = argparse.ArgumentParser(prog="dabs-rq data", description="Datasets known to dabs-rq and their state.")
    parser.add_argument(
        "action",
        choices=["status", "table"],
        help="status: every dataset, its state, path and size; table: Markdown list of sources",
    )
    parser.add_argument("--data-root", default=None, help=f"data root (default: ${storage.DATA_ENV} or ./DATASETS)")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="with 'table': put it between the DATASETS START/END markers of this file "
        "(the project's list: docs/datasets.md); without it the list is printed",
    )
    args = parser.parse_args(argv)
    if args.action == "table":
        from dabs_rq.readme import inject_block

        markdown = storage.sources_markdown([domains.load(name) for name in domains.available()])
        if args.readme:
            inject_block(args.readme, "DATASETS", markdown)
        else:
            print(markdown, end="")
        return 0
    root = storage.data_root(args.data_root)
    rows = [storage.status(domains.load(name), root) for name in domains.available()]
    header = ("dataset", "role", "state", "size", "path")
    table = [header] + [(r.name, r.role, r.state, r.size, r.path) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    counts = {state: sum(r.state == state for r in rows) for state in sorted({r.state for r in rows})}
    print(f"\n{len(rows)} datasets under {root}: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return 0


def config_choices(group: str) -> list[str]:
    """The options of a config group: files under conf/<group>/ plus those plugins register."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    from dabs_rq.paths import CONF_DIR

    names = {path.stem for path in (CONF_DIR / group).glob("*.yaml")}
    if group.startswith("hydra/"):
        Plugins.instance()  # plugins register their configs (e.g. submitit_slurm) on discovery
        try:
            names |= {name.rsplit(".", 1)[0] for name in ConfigStore.instance().list(group)}
        except OSError:
            pass
    return sorted(names)


def check_group_choices(args: list[str]) -> None:
    """Reject an unknown option of a config group (algorithm=foo, model=..., hydra/launcher=...) in one line.

    Hydra would report it too, but over several lines and with exit status 1.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException

    from dabs_rq.paths import CONF_DIR

    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir() and path.name != "hydra"}
    groups |= {f"hydra/{path.name}" for path in (CONF_DIR / "hydra").iterdir() if path.is_dir()} | {"hydra/launcher"}
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except HydraException:
        return  # a syntax error: Hydra's own message says where
    for override in overrides:
        group = override.key_or_group
        if group not in groups or override.is_delete() or override.value_type == ValueType.GLOB_CHOICE_SWEEP:
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        valid = config_choices(group)
        for value in values:
            if value not in valid and value != "null":
                raise UserError(f"unknown {group} {value!r}; valid: {', '.join(valid)}")


#: How Python words a call whose keywords do not fit the callable's signature.
_SIGNATURE_MISMATCH = re.compile(r"unexpected keyword argument|missing \d+ required (positional|keyword-only) argument")


def _user_error(err: BaseException) -> BaseException | None:
    """The user-facing error inside ``err`` (Hydra wraps errors raised while instantiating)."""
    from hydra.errors import InstantiationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        if isinstance(err.__cause__, TypeError) and _SIGNATURE_MISMATCH.search(str(err.__cause__)):
            # a config key the target does not take, or one it lacks (any other TypeError is a bug)
            target = str(err).splitlines()[0].rstrip(":")
            return UserError(f"{target}: {err.__cause__}")
        err = err.__cause__
    return err if isinstance(err, USER_ERRORS) else None


def _fix_hint(err: BaseException) -> str:
    """What to do about an error whose message cannot know the run's settings (a corrupt file)."""
    if isinstance(err, CorruptDataError) and "on_corrupt" not in str(err):
        return "; fix or replace it, or run with on_corrupt=skip to leave corrupt samples out (they are counted)"
    return ""


def run_job(cfg: Any) -> None:
    """One job of ``dabs-rq`` (Hydra's task function): run it; a user's mistake becomes one line and exit 2.

    Module-level so that a launcher running jobs in worker processes can pickle it by reference."""
    from dabs_rq.checkpointing import Preempted
    from dabs_rq.noise import silence_known_noise
    from dabs_rq.run import run

    silence_known_noise()
    try:
        run(cfg)
    except Preempted as err:  # checkpoint saved; the exit status tells the scheduler it was a signal
        print(f"dabs-rq: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except Exception as err:  # noqa: BLE001 - user errors become one line, others keep their traceback
        user_error = _user_error(err)
        if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"dabs-rq: error: {user_error}{_fix_hint(user_error)}", file=sys.stderr)
        sys.exit(2)


def _hydra_main() -> None:
    import hydra

    from dabs_rq.paths import CONF_DIR

    if os.environ.get("HYDRA_FULL_ERROR") != "1":
        try:
            check_group_choices(sys.argv[1:])
        except ValueError as err:
            print(f"dabs-rq: error: {err}", file=sys.stderr)
            sys.exit(2)
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(run_job)()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "table":
        sys.exit(table_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "ablation":
        sys.exit(ablation_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "data":
        sys.exit(data_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "bench":
        from dabs_rq.bench import main as bench_main

        sys.exit(bench_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "plan":
        from dabs_rq.plan import main as plan_main

        sys.exit(plan_main(sys.argv[2:]))
    _hydra_main()


if __name__ == "__main__":
    main()
