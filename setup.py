"""Setuptools hook (everything else is in pyproject.toml): a wheel carries the checkout's
top-level methods/, sweeps/, configs/ and protocols/ folders inside the package, as
sparsebench/_builtin/<folder>/, where sparsebench.storage.paths finds them through importlib.resources.

An editable install copies nothing: the package then runs from the checkout and reads the
folders where they are (sparsebench.storage.paths.builtin_dir falls back to them). The folders stay at
the top of the repository, where users edit them; MANIFEST.in puts them in the sdist too.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUILTIN = {"methods": "*.py", "sweeps": "**/*.yaml", "configs": "*.yaml", "protocols": "*.yaml"}


class BuildPyWithBuiltins(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, pattern in BUILTIN.items():
            for source in sorted(Path(folder).glob(pattern)):
                if source.name.startswith(("_", ".")):
                    continue
                target = Path(self.build_lib, "sparsebench", "_builtin", source)
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPyWithBuiltins})
