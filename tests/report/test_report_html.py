"""index.html as a person sees it: opened in headless Chromium (skipped where Chromium is not installed; CI
installs it with apt), its text and images checked and a screenshot taken."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from test_report import make_run

from bonito_adapt.report import report_runs

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
                None)


def _browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=120)


def test_index_html_is_self_contained_and_shows_tables_images_and_tasks(tmp_path):
    import json

    run_dir = make_run(tmp_path, "html", "mistralai/Mistral-7B-v0.1", base_f1=0.3, adapted_f1=0.45)
    tasks = [{"input": f"Is clause {i} about <refunds>?", "output": "No" if i % 3 else "Yes", "task_type": "ynqa",
              "context": f"Clause {i}.", "source_id": f"doc{i % 2}.md"} for i in range(12)]
    (run_dir / "generate" / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    out = report_runs([run_dir])
    page = (out / "index.html").read_text()
    assert "src=\"data:image/png;base64," in page and not re.search(r"src=\"[^\"]+\.png\"", page)  # inline only
    assert "Is clause 3 about &lt;refunds&gt;?" in page  # task text escaped, not markup
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")

    moved = tmp_path / "elsewhere"  # self-contained: it still shows everything away from its folder
    moved.mkdir()
    shutil.copy(out / "index.html", moved / "index.html")
    dom = _browser("--dump-dom", f"file://{moved / 'index.html'}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shown = re.search(r'data-images-shown="(\d+)"', dom.stdout)
    total = re.search(r'data-images="(\d+)"', dom.stdout)
    assert shown and total and int(shown[1]) == int(total[1]) >= 3  # metrics, loss, lengths: all decoded
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    for visible in ("Adaptation report", "pubmed_qa", "Generated tasks", "A random sample", "Answers",
                    "All generated tasks", "Is clause 11 about &lt;refunds&gt;?"):
        assert visible in text, visible
    assert '<table id="all-tasks">' in dom.stdout and dom.stdout.count("<tr>") > 12

    screenshot = tmp_path / "report.png"
    shot = _browser(f"--screenshot={screenshot}", "--window-size=1280,2400", f"file://{moved / 'index.html'}")
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == (1280, 2400)
        grey = image.convert("L")
        low, high = grey.getextrema()
        assert high - low > 100  # text and charts, not a blank page
        dark = sum(1 for value in grey.getdata() if value < 128) / (1280 * 2400)
        assert 0.005 < dark < 0.5, dark
