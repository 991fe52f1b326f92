"""Data outside the repository: the α-UMi examples in ../shared/data beside a development checkout. It is
optional (a fresh clone or a packager has none): tests that need it are marked `needs(path)` and skip."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TRAIN = SHARED / "data" / "alpha-umi" / "train-example"


def needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not found (optional data beside the repository)")


needs_train = needs(TRAIN)
