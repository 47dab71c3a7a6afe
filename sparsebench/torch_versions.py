"""The torch and torchvision releases that go together, named in one place.

Each torchvision release is built for one torch release (and, in its wheel, one build of it:
CUDA or CPU); beside any other it fails to import or to load its operators. sparsebench needs
torchvision only for ImageNet (``data.name: imagenet``). Used by:

* ``make setup VISION=1``, which installs the matching torchvision with TORCH_SPEC's torch (this
  file runs as a script there, on the standard library alone, before anything is installed)::

      python sparsebench/torch_versions.py torchvision-for "torch==2.13.0"  # torchvision==0.28.*

* ``make test``, whose vision tests run in .venv-vision on the pair :data:`TESTED`;
* :mod:`sparsebench.training.preflight`, which stops an ImageNet run or sweep before anything is
  submitted when torchvision is missing or does not import beside the installed torch
  (:func:`vision_problem`), naming the versions to install.
"""
from __future__ import annotations

import functools
import re
import sys

# torch release -> the torchvision release built for it (sparsebench supports torch 2.11+).
PAIRS = {"2.11": "0.26", "2.12": "0.27", "2.13": "0.28", "2.14": "0.29"}
# The pair `make test` runs the vision tests on (.venv-vision); from PyPI, a CUDA 13 build of
# both, which runs on a CPU too.
TESTED = "torch==2.14.1 torchvision==0.29.1"
# CPU-only builds of both (no CUDA libraries to download): PyTorch's own index.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def release(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return f"{match[1]}.{match[2]}" if match else version


def torchvision_for(torch_version: str) -> str | None:
    """The torchvision release (``0.28``) built for a torch version, None for one not listed."""
    return PAIRS.get(release(torch_version))


def install_line(torch_version: str) -> str:
    """The pip command that installs torch ``torch_version`` with its torchvision."""
    plain = torch_version.split("+")[0]
    vision = torchvision_for(plain)
    if vision is None:
        supported = ", ".join(f"{t}/{v}" for t, v in PAIRS.items())
        return f"pip install {TESTED} (torch {plain} is not listed; supported pairs: {supported})"
    cpu = f" --index-url {CPU_INDEX}" if torch_version.endswith("+cpu") else ""
    return f"pip install torch=={plain} torchvision=={vision}.*{cpu}"


def pair_problem(torch_version: str, torchvision_version: str) -> str | None:
    """Why the two versions do not go together (None when they do, or torch is not listed)."""
    wanted = torchvision_for(torch_version)
    if wanted is None or release(torchvision_version) == wanted:
        return None
    return (f"torchvision {torchvision_version} is built for another torch release than "
            f"{torch_version}")


@functools.lru_cache(maxsize=1)
def vision_problem() -> str | None:
    """One line saying why torchvision cannot be used beside the installed torch (missing, it
    fails to import, or another release's), naming what to install; None when it can."""
    import importlib.metadata

    import torch

    try:
        installed = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # a broken install fails with more than ImportError
        text = (str(err).strip().splitlines() or [""])[0]
        if installed is None and isinstance(err, ImportError):
            why = f"torchvision is not installed (beside torch {torch.__version__})"
        else:
            name = f"torchvision {installed}" if installed else "torchvision"
            why = f"{name} fails to import beside torch {torch.__version__} ({type(err).__name__}: {text})"
        return f"{why}; install the matching pair: {install_line(torch.__version__)}"
    found = pair_problem(torch.__version__, torchvision.__version__)
    if found:
        return f"{found}; install the matching pair: {install_line(torch.__version__)}"
    return None


def main(argv: list[str]) -> int:
    """``torchvision-for "TORCH_SPEC"``: the torchvision requirement matching the torch in a pip
    requirement string (``torch==2.13.0 ...``); ``tested``: :data:`TESTED`; ``check``: exit 1
    with :func:`vision_problem`'s line when torchvision cannot be used here."""
    if argv[:1] == ["tested"]:
        print(TESTED)
        return 0
    if argv[:1] == ["check"]:
        problem = vision_problem()
        print(f"error: {problem}" if problem else "torchvision: usable beside torch", file=sys.stderr)
        return 1 if problem else 0
    if len(argv) == 2 and argv[0] == "torchvision-for":
        match = re.search(r"torch==(\d+\.\d+)", argv[1])
        vision = torchvision_for(match[1]) if match else None
        if vision is None:
            print(f"error: TORCH_SPEC {argv[1]!r} names no torch release listed in "
                  f"sparsebench/torch_versions.py ({', '.join(PAIRS)}); name torchvision in "
                  f"TORCH_SPEC yourself", file=sys.stderr)
            return 2
        print(f"torchvision=={vision}.*")
        return 0
    print("usage: torch_versions.py tested | check | torchvision-for TORCH_SPEC", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
