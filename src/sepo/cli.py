"""The ``sepo`` command: one entry point, one subcommand per module of :mod:`sepo.commands`.

Plugging in a command: write ``sepo/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int`` (see :mod:`sepo.commands`), then add its module path to :data:`COMMANDS`. A listed
module that does not exist yet is skipped; one that fails to import shows up as an unavailable command
(running it explains why) instead of breaking the others.

Exit codes: 0 success; 2 a user error (:class:`sepo.errors.SepoError` or a file-system error, printed
as one ``error: ...`` line without traceback; ``--debug`` shows it) or bad arguments; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

import torch

from sepo import __version__
from sepo.commands import HelpFormatter
from sepo.errors import SepoError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand modules, in the order ``sepo --help`` lists them.
COMMANDS = [
    "sepo.commands.pretrain",
    "sepo.commands.sample",
    "sepo.commands.eval",
    "sepo.commands.finetune",
    "sepo.commands.oracle",
    "sepo.commands.bench",
    "sepo.commands.demo",
]

DESCRIPTION = """\
sepo fine-tunes discrete diffusion models (masked and uniform CTMC diffusion over DNA and text) toward
any reward with policy gradients (SEPO, Zekri & Boulle, NeurIPS 2025). Its commands pretrain a
diffusion model on real data, sample from it with every standard sampler, and evaluate it.

Run `sepo COMMAND --help` for the options of a command."""

EPILOG = """\
quickstart (a tiny DNA model, a few CPU minutes):
  sepo pretrain --task dna --preset tiny --out runs/dna-tiny
  sepo sample --model runs/dna-tiny --n 64 --seed 0 --out runs/dna-tiny/samples.fasta
  sepo eval --model runs/dna-tiny --split test --json runs/dna-tiny/eval.json --samples runs/dna-tiny/samples.fasta"""


class _Unavailable:
    """Stands in for a command whose module failed to import; running it reports the cause."""

    def __init__(self, name: str, error: BaseException):
        self.name, self.error = name, error

    def __call__(self, args) -> int:
        first = (str(self.error).strip().splitlines() or [type(self.error).__name__])[0]
        raise SepoError(f"command {self.name!r} is unavailable in this installation ({type(self.error).__name__}: {first}); "
                        "reinstall sepo (`make install`) or report the bug")


def build_parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per importable module in ``commands`` (default :data:`COMMANDS`)."""
    parser = argparse.ArgumentParser(prog="sepo", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"sepo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (for bug reports)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module_name in COMMANDS if commands is None else commands:
        name = module_name.rsplit(".", 1)[-1]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue  # listed but not written yet
            _add_unavailable(subparsers, name, e)
            continue
        except Exception as e:  # a broken module must not take the other commands down
            _add_unavailable(subparsers, name, e)
            continue
        if not (callable(getattr(module, "add_parser", None)) and callable(getattr(module, "run", None))):
            _add_unavailable(subparsers, name, AttributeError(f"{module_name} lacks add_parser(subparsers) or run(args)"))
            continue
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def _add_unavailable(subparsers, name: str, error: BaseException) -> None:
    sub = subparsers.add_parser(name, help="(unavailable: failed to load; run it to see why)", add_help=True)
    sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    sub.set_defaults(_run=_Unavailable(name, error))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Run ``sepo`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, --version, or an argument error (argparse printed it)
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        run = getattr(args, "_run", None)
        if run is None:
            parser.print_help(sys.stderr)
            return 2
        threads = torch.get_num_threads()
        try:
            return int(run(args) or 0)
        finally:  # commands may set the thread count; leave an embedding process (tests) as it was
            torch.set_num_threads(threads)
    except SepoError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user gave cannot be read or written
        if debug:
            traceback.print_exc()
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or _one_line(e)}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
