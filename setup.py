"""Build hook: a wheel carries the image build files as ``lab/_image`` package data.

Everything else is in pyproject.toml. The files stay where the images and the
checkout want them (``services/Dockerfile``, its scripts, the lock files); this
copies them into the built ``lab`` package, so an installed ``lab`` builds its
images with no checkout (``lab.images.find_inputs``). An editable install reads
them from the checkout instead and gets no copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# What lab.images.DATA_FILES names (a unit test keeps the two in step).
IMAGE_FILE_PATTERNS = ("Dockerfile", "*.sh", "requirements*.txt")


def image_files() -> list[Path]:
    return sorted(
        path
        for pattern in IMAGE_FILE_PATTERNS
        for path in (HERE / "services").glob(pattern)
        if path.is_file()
    )


class BuildWithImageFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "lab" / "_image"
        target.mkdir(parents=True, exist_ok=True)
        for path in image_files():
            shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildWithImageFiles})
