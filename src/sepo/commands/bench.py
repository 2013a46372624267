"""``sepo bench NAME``: run one of the registered benchmarks (see :mod:`sepo.bench`)."""

from __future__ import annotations

import argparse
import textwrap

from sepo.errors import SepoError

from . import HelpFormatter, add_command

NAME = "bench"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from sepo.bench import load_benchmarks

    benchmarks, errors = load_benchmarks()
    names = ", ".join(benchmarks) or "none"
    p = add_command(
        subparsers,
        NAME,
        help="run a benchmark (speed of an iteration and of the samplers, ...)",
        description=f"""
        Run a registered benchmark; each writes JSON and a markdown table to its --out folder.
        Available: {names}. Run `sepo bench NAME --help` for a benchmark's options.""",
        examples="""
        sepo bench speed --preset cpu --out runs/speed --num-threads 1
        sepo bench speed --preset paper --device cuda --out runs/speed-gpu""",
    )
    sub = p.add_subparsers(dest="benchmark", metavar="NAME", title="benchmarks")
    for bench in benchmarks.values():
        examples = textwrap.dedent(bench.examples).strip()
        bp = sub.add_parser(bench.name, help=bench.help, description=textwrap.dedent(bench.description).strip(),
                            epilog=("examples:\n" + textwrap.indent(examples, "  ")) if examples else None,
                            formatter_class=HelpFormatter)
        bp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error")
        bench.add_arguments(bp)
        bp.set_defaults(_bench_run=bench.run)
    for module_name, error in errors.items():
        name = module_name.rsplit(".", 1)[-1]
        bp = sub.add_parser(name, help="(unavailable: failed to load; run it to see why)")
        bp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        bp.set_defaults(_bench_run=_unavailable(name, error))
    return p


def _unavailable(name: str, error: BaseException):
    def run(args) -> int:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SepoError(f"benchmark {name!r} is unavailable ({type(error).__name__}: {first}); reinstall sepo or report the bug")

    return run


def run(args) -> int:
    bench_run = getattr(args, "_bench_run", None)
    if bench_run is None:
        raise SepoError("name a benchmark: `sepo bench speed ...` (see `sepo bench --help`)")
    return int(bench_run(args) or 0)
