"""A random-init model of a real architecture, with a real tokenizer instead of a made-up one.

`../shared/bench/random_model.py` gives each shape a BPE tokenizer trained on made-up words, so
English text takes ~4x the tokens and " yes"/" no" are several tokens each. For ranked evaluation
that changes what is measured (lm-eval scores one-token answer choices of an example from one
forward), so `bench_eval.py` on the GPU uses this: the same architecture numbers (taken from
random_model.py), the vocabulary size of the given tokenizer (SmolLM2's: 49,152 instead of
Mistral's 32,000, +2% parameters), random bf16 weights.

    python scripts/random_model_with_tokenizer.py mistral-7b models/SmolLM2-135M-Instruct /tmp/m7t --device cuda
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

DEFAULT_YARDSTICKS = Path(__file__).resolve().parents[2] / "shared" / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("arch", help="an architecture of random_model.py (mistral-7b, llama-3.1-8b, ...)")
    parser.add_argument("tokenizer", help="a local tokenizer (or model) folder")
    parser.add_argument("out")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--yardsticks", default=str(DEFAULT_YARDSTICKS), help="folder holding random_model.py")
    args = parser.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec_file = importlib.util.spec_from_file_location("random_model", Path(args.yardsticks) / "random_model.py")
    random_model = importlib.util.module_from_spec(spec_file)
    spec_file.loader.exec_module(random_model)
    spec = dict(random_model.ARCHS[args.arch])
    model_type = spec.pop("model_type")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    spec.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = AutoConfig.for_model(model_type, **spec)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(json.dumps({"arch": args.arch, "tokenizer": args.tokenizer, "vocab_size": len(tokenizer),
                      "params": sum(p.numel() for p in model.parameters()), "out": args.out}))


if __name__ == "__main__":
    main()
