"""Subcommands of the ``sepo`` command line; one module per subcommand.

A subcommand module exposes ``add_parser(subparsers) -> argparse.ArgumentParser`` (build its parser
with :func:`add_command`, which gives every command the same help layout and a ``--debug`` flag) and
``run(args) -> int`` (the exit code). User errors are raised as :class:`sepo.errors.SepoError`; the CLI
prints them as one line. List the module in :data:`sepo.cli.COMMANDS` to plug it in.
"""

from __future__ import annotations

import argparse
import textwrap

import torch

from sepo.errors import ConfigError
from sepo.train.pretrain import resolve_device

__all__ = ["HelpFormatter", "add_command", "add_device_argument", "resolve_device", "set_threads"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's paragraphs and examples as written, and appends ``(default: X)`` to every
    option that has a meaningful default (options whose help already states it are left alone)."""

    def __init__(self, prog, **kwargs):
        kwargs.setdefault("max_help_position", 30)
        kwargs.setdefault("width", 100)
        super().__init__(prog, **kwargs)

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default:" in text or not action.option_strings:
            return text
        if action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool):
            return text
        return f"{text} (default: %(default)s)"


def add_command(subparsers, name: str, *, help: str, description: str, examples: str):
    """Create the parser of subcommand ``name`` with a description paragraph and an examples section."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=textwrap.dedent(description).strip(),
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=HelpFormatter,
    )
    # SUPPRESS: `sepo --debug CMD` and `sepo CMD --debug` both work (the subparser must not reset it)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error (for bug reports)")
    return parser


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default="auto",
                        help="where to run: auto (CUDA if available, else CPU), cpu, cuda or cuda:N")


def set_threads(num_threads: int | None) -> None:
    """Use ``num_threads`` CPU threads (``None``: every core this process may use)."""
    import os

    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"--num-threads must be >= 1, got {num_threads}")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(num_threads or cores)
