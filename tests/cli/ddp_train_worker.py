"""Worker of tests/cli/test_train.py's two-rank test, started by ``torchrun --nproc_per_node=2``: runs
``hybridflow train`` in each rank and writes what the rank printed to ``<out>/rank<r>.{out,err}``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from click.testing import CliRunner

from hybridflow.cli import cli


def main(out: str) -> None:
    rank = os.environ["RANK"]
    args = ["train", "--steps", "2", "--batch-size", "16", "--val-limit", "40", "--threads", "1", "--device", "cpu",
            "-o", "num_layers=1", "-o", "hidden=8", "-o", "steps=1", "--out", os.path.join(out, "run")]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    Path(out, f"rank{rank}.out").write_text(result.stdout)
    Path(out, f"rank{rank}.err").write_text(f"exit {result.exit_code}\n{result.stderr}")


if __name__ == "__main__":
    main(sys.argv[1])
