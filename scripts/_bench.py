"""What the bench_*.py scripts share: run one measured variant in a fresh process, read its result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def run_worker(command: list[str], result_file: Path | None = None) -> dict:
    """Run `command` (a worker that prints its JSON result as the last stdout line, or writes it to
    `result_file`); a failed worker becomes {"error": its last stderr line, "stderr_tail": ...}."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        if result_file is None and done.stdout.strip():
            return json.loads(done.stdout.strip().splitlines()[-1])
        if result_file is not None and Path(result_file).is_file():
            return json.loads(Path(result_file).read_text())
    tail = done.stderr.strip().splitlines()
    return {"error": tail[-1] if tail else f"exit {done.returncode}", "stderr_tail": done.stderr[-3000:]}
