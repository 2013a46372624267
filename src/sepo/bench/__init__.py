"""Benchmarks run by ``sepo bench NAME``: a registry of named benchmark functions.

A benchmark is a function ``run(args) -> int`` registered with :func:`register` together with a function
that adds its options to an ``argparse`` parser::

    from sepo.bench import register

    def add_arguments(parser): parser.add_argument("--out", required=True)

    @register("speed", help="...", description="...", examples="...", add_arguments=add_arguments)
    def run(args) -> int: ...

Registration happens when the module is imported; :func:`load_benchmarks` imports every module listed in
:data:`BENCHMARK_MODULES` (a listed module that does not exist yet is skipped, one that fails to import is
reported as unavailable instead of hiding the others), and ``sepo bench`` shows one subcommand per entry.
Adding a benchmark = writing its module and listing it in :data:`BENCHMARK_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable

__all__ = ["Benchmark", "BENCHMARK_MODULES", "register", "registered", "load_benchmarks"]

#: Modules that register benchmarks, in the order ``sepo bench --help`` lists them.
BENCHMARK_MODULES = ["sepo.bench.speed", "sepo.bench.dna", "sepo.bench.text"]


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark.

    Attributes:
        name: subcommand name (``sepo bench NAME``).
        help: one-line summary shown by ``sepo bench --help``.
        description: paragraph(s) shown by ``sepo bench NAME --help``.
        examples: example command lines (one per line).
        add_arguments: ``(parser) -> None``, adds the benchmark's options.
        run: ``(args) -> int``, runs it and returns the exit code.
    """

    name: str
    help: str
    description: str
    examples: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_REGISTRY: dict[str, Benchmark] = {}


def register(name: str, *, help: str, description: str = "", examples: str = "",
             add_arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Decorator: register ``run(args) -> int`` as benchmark ``name`` (re-registering replaces it)."""

    def decorator(run: Callable[[argparse.Namespace], int]):
        _REGISTRY[name] = Benchmark(name, help, description or help, examples, add_arguments or (lambda p: None), run)
        return run

    return decorator


def registered() -> dict[str, Benchmark]:
    """The benchmarks registered so far (name -> :class:`Benchmark`), in registration order."""
    return dict(_REGISTRY)


def load_benchmarks(modules: list[str] | None = None) -> tuple[dict[str, Benchmark], dict[str, BaseException]]:
    """Import the benchmark modules; return ``(registered benchmarks, {module: import error})``.

    A module that does not exist is skipped silently (listed for a benchmark not written yet); any other
    import failure is returned so the command can say why a benchmark is missing.
    """
    errors: dict[str, BaseException] = {}
    for module_name in BENCHMARK_MODULES if modules is None else modules:
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue
            errors[module_name] = e
        except Exception as e:  # a broken benchmark must not take the others down
            errors[module_name] = e
    return registered(), errors
