"""Docs stay true to the code: the recipe reference is regenerated from the schema."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_recipe_reference_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_recipe_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
