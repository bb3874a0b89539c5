"""`hybridflow sample`: a PNG grid of samples."""

from __future__ import annotations

import json

from PIL import Image

from tests.cli.runner import run


def test_sample_writes_a_png_grid(trained, tmp_path):
    path = tmp_path / "grid.png"
    payload = json.loads(run("sample", "-c", trained, "-n", "9", "-t", "0.5", "--out", path, "--json").stdout)
    assert payload["path"] == str(path) and path.stat().st_size > 0
    width, height = Image.open(path).size
    assert width == height >= 3 * 32  # a 3x3 grid, each 8x8 digit enlarged to 32 pixels
