"""Shared fixtures: tiny random models built on the fly, and the real small model.

Tiny models: a byte-level BPE tokenizer trained in about a second on generated text, plus a
2-layer Llama of hidden size 16 saved to a temp folder. Real model: SmolLM2-135M-Instruct,
converted once by scripts/fetch_quickstart_model.py (CI runs it before the tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # datasets and transformers give their loggers a stderr handler the first time they are used.
    # Made inside a test that captures output (capsys), that handler would keep writing to the
    # test's closed capture stream, and later log records print "--- Logging error ---". Bind
    # them now, to the session's stderr.
    import datasets  # noqa: F401
    import transformers  # noqa: F401
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    datasets_logging.get_logger()
    transformers_logging.get_logger()
SMOLLM2_DIR = Path(os.environ.get("BONITO_ADAPT_SMOLLM2", ROOT / "models" / "SmolLM2-135M-Instruct"))

# Minimal ChatML template so "prompted"/"chat" code paths work on tiny models too.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    words = ("the contract party shall not disclose confidential information agreement term notice "
             "question answer yes no maybe true false premise hypothesis entailment context task input "
             "output pipe receiving disclosing obligations return destroy materials days written consent").split()
    lines = []
    for i in range(400):
        lines.append(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(24)))
    lines += ["<|tasktype|> <|context|> <|task|> <|pipe|> <|input|> <|output|> {{context}} 0123456789 .,;:?!'\"()"]
    return lines


def build_tiny_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = CHATML
    return fast


def build_tiny_model_dir(path: Path, vocab_size: int = 512) -> Path:
    """A 2-layer random Llama + trained tokenizer saved as a normal HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct folder, fetched on first use."""
    if not (SMOLLM2_DIR / "config.json").is_file():
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_quickstart_model.py"),
                                 "--out", str(SMOLLM2_DIR)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"could not fetch SmolLM2-135M-Instruct: {result.stderr.strip()[-500:]}")
    return SMOLLM2_DIR


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe dict (or raw text) to tmp_path and return its path."""
    import yaml

    def _write(content, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        return path

    return _write


@pytest.fixture
def one_torch_thread():
    """One torch thread: the CI box has 2 shared cores, and oversubscribed OpenMP threads make tiny
    models up to 30x slower (subprocesses started by tests use one thread too: same numerics)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
