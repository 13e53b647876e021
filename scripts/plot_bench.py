"""Plot benchmark results (the JSON files the bench_*.py scripts write) as one PNG of tokens/s.

    python scripts/plot_bench.py docs/bench/train_h200_memory_plan.json docs/bench/generate_h100_final.json \\
        docs/bench/eval_h100_trie_contract_nli.json docs/bench/eval_h100_trie_pubmed_qa.json --out docs/bench/throughput.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# bench -> (value plotted, panel title, the yardstick the ratios are taken against)
PANELS = {
    "train": ("tokens_per_s", "Q-LoRA training, Mistral-7B shape (tokens/s)", "reference"),
    "generate": ("gen_tokens_per_s", "Generation, Llama-3.1-8B shape (generated tokens/s)", "reference"),
    "eval": ("examples_per_s", "Ranked evaluation, Mistral-7B shape (examples/s)", "paper"),
}
OLDER_REFERENCE_NAMES = {"paper": "per-choice"}  # eval files written before the paper path had its name
YARDSTICKS = ("reference", "per-choice", "paper")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="JSON files written by scripts/bench_*.py --out")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # per panel: name -> (value, the reference of the same run): ratios are only taken within one run
    panels: dict[str, dict[str, tuple[float, float | None]]] = {}
    for file in args.results:
        data = json.loads(Path(file).read_text())
        if data["bench"] not in PANELS:  # e.g. generate_vllm: its own table in docs/performance.md
            continue
        key, title, reference_name = PANELS[data["bench"]]
        if reference_name not in data["results"]:
            reference_name = OLDER_REFERENCE_NAMES.get(reference_name, reference_name)
        task = f", {data['task']}" if data.get("task") else ""
        title = f"{title}\n{data.get('device', '')}{task}"  # one panel per bench, device (and task)
        panel = panels.setdefault(title, {})
        reference = data["results"].get(reference_name, {}).get(key)
        for name, result in data["results"].items():
            if key in result and not (name == reference_name and reference_name in panel):
                panel[name] = (result[key], reference)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, values) in zip(axes.flat, panels.items(), strict=False):  # the grid may have spare cells
        names = list(values)
        bars = ax.bar(names, [values[n][0] for n in names],
                      color=["#999999" if n.startswith(YARDSTICKS) else "#3b75af"
                             for n in names])
        for bar, name in zip(bars, names, strict=True):
            value, reference = values[name]
            label = (f"{value:,.0f}" if value >= 100 else f"{value:.1f}") + (f"\n{value / reference:.2f}x" if reference else "")
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.set_ylim(0, max(v for v, _ in values.values()) * 1.25)
    fig.suptitle("bonito_adapt vs the paper's recipe (grey); ratios within one run", fontsize=11)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
