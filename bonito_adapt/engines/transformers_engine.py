"""In-process generation with Hugging Face transformers (the default engine without vLLM).

Prompts are sorted by length and generated in batches with left padding, so each batch wastes
little compute on padding. bf16 on GPU, fp32 on CPU (`dtype: auto`); optional 4-bit loading
through bitsandbytes on CUDA. Sampling is seeded once per `generate` call, so the same prompts
with the same seed give the same completions (the generate stage seeds each shard, which makes a
resumed run equal to an uninterrupted one).
"""

from __future__ import annotations

import importlib.util

from ..errors import UserError, missing_extra
from ..generate_config import GenerateConfig, SamplingConfig
from ..models import load_causal_lm, load_tokenizer, torch_dtype

__all__ = ["TransformersEngine"]


class TransformersEngine:
    name = "transformers"

    def __init__(self, config: GenerateConfig):
        import torch

        self.config = config
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model_kwargs = {}
        if config.load_in_4bit:
            model_kwargs = self._four_bit_kwargs()
        self.tokenizer = load_tokenizer(
            config.tokenizer or config.model, field="generate.tokenizer" if config.tokenizer else "generate.model",
            gguf_file=None if config.tokenizer else config.gguf_file,
            trust_remote_code=config.trust_remote_code, padding_side="left",
        )
        self.model = load_causal_lm(
            config.model, field="generate.model", gguf_file=config.gguf_file,
            dtype=torch_dtype(config.dtype, self.device), trust_remote_code=config.trust_remote_code, **model_kwargs,
        )
        if not config.load_in_4bit:
            self.model.to(self.device)
        self.model.eval()
        self._stop_ids = self._eos_ids()
        # Ids dropped from completions: padding and end-of-sequence markers. Other special tokens
        # (Bonito's <|pipe|> is one) are kept, because the parser needs them.
        self._drop_ids = set(self._stop_ids) | {i for i in (self.tokenizer.pad_token_id, self.tokenizer.bos_token_id)
                                                if i is not None}

    def _four_bit_kwargs(self) -> dict:
        import torch

        if not torch.cuda.is_available():
            raise UserError("generate.load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit); set load_in_4bit: false "
                            "on this machine")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise missing_extra("bitsandbytes", "train")
        from transformers import BitsAndBytesConfig

        compute = torch.float32 if self.config.dtype == "float32" else torch_dtype(
            "bfloat16" if self.config.dtype == "auto" else self.config.dtype, "cuda")
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True)
        return {"quantization_config": quantization, "device_map": {"": 0}}

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    @property
    def max_context(self) -> int | None:
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if value else None

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, prompts: list[str]):
        # A chat-templated prompt already starts with BOS; do not add a second one.
        bos = self.tokenizer.bos_token
        starts_with_bos = bool(bos) and all(p.startswith(bos) for p in prompts)
        return self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not starts_with_bos)

    def _decode(self, token_ids) -> str:
        kept = []
        for token_id in token_ids.tolist():
            if token_id in self._stop_ids:
                break
            if token_id not in self._drop_ids:
                kept.append(token_id)
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[list[str]]:
        """`sampling.n` completions per prompt, in prompt order; text after the prompt only."""
        import torch

        if not prompts:
            return []
        greedy = sampling.temperature == 0
        # Greedy decoding gives one answer; n copies of it keep the n-per-prompt contract.
        per_prompt = 1 if greedy else sampling.n
        lengths = [self.count_tokens(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
        results: list[list[str]] = [[] for _ in prompts]
        torch.manual_seed(sampling.seed)
        options = {"max_new_tokens": sampling.max_tokens, "do_sample": not greedy, "eos_token_id": self._stop_ids,
                   "pad_token_id": self.tokenizer.pad_token_id, "num_return_sequences": per_prompt}
        if not greedy:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        batch_size = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                encoded = self._encode([prompts[i] for i in batch]).to(self.model.device)
                output = self.model.generate(**encoded, **options)
                new_tokens = output[:, encoded["input_ids"].shape[1]:]
                for row, index in enumerate(batch):
                    texts = [self._decode(new_tokens[row * per_prompt + k]) for k in range(per_prompt)]
                    results[index] = texts * sampling.n if greedy else texts
        return results

    def close(self) -> None:
        import torch

        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
