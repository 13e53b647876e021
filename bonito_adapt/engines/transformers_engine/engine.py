"""In-process generation with Hugging Face transformers (the default engine without vLLM).

Prompts are sorted by length and generated in batches with left padding, so each batch wastes
little compute on padding. On a GPU (`compile_decode: auto`) the decode step runs compiled over a
static KV cache (transformers' own fast path: torch.compile with CUDA graphs), and the prompts of
a batch are prefilled in groups of similar length straight into that cache; one-token decode steps
attend on the key/value heads and, compiled, read only the cache blocks each row uses
(`decode_attention.py`, `sdpa_decode`). Temperature and top-p go through `nucleus.py`, transformers'
filter with a cheaper sort. `continuous_batching: true` uses
transformers' `generate_batch` instead (paged KV cache); it measured no faster on an H100
(docs/performance.md), so it is opt-in. bf16 on GPU, fp32 on CPU (`dtype: auto`); optional 4-bit
loading through bitsandbytes on CUDA. Sampling is seeded once per `generate` call, so the same
prompts with the same seed give the same completions (the generate stage seeds each shard, which
makes a resumed run equal to an uninterrupted one).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from pathlib import Path

from ...errors import UserError, missing_extra
from ...models import load_causal_lm, load_tokenizer, torch_dtype
from ..spec import EngineSpec, SamplingConfig
from .decode_attention import register_decode_attention
from .nucleus import NucleusWarper, plain_sampling

__all__ = ["TransformersEngine"]

logger = logging.getLogger(__name__)

# Below this many generated tokens a compiled decode step does not repay its compile: measured on an H200
# (docs/performance.md), the compile of an 8B model's step takes ~100 s cold and the compiled step is ~3x
# the eager one, so it pays from a few hundred thousand tokens; on a 135M model a whole 41k-token stage ran
# at a quarter of its eager speed because of it.
COMPILE_MIN_TOKENS = 200_000


def use_persistent_compile_cache() -> None:
    """Keep torch.compile's artifacts (Inductor's FX graph and autotune caches) in the user's cache folder
    instead of /tmp, so a later run, even after a reboot, reuses them (TORCHINDUCTOR_CACHE_DIR wins)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "bonito_adapt" / "torchinductor")

# Prompt tokens (rows x columns) prefilled in one forward by the compiled path. The forward's
# activations and the keys/values it returns sit beside the full static cache until copied in:
# for an 8B model, 32k tokens take about 7 GB, and GEMMs of 32k rows still run at full speed.
PREFILL_TOKENS = 32768


class TransformersEngine:
    name = "transformers"

    def __init__(self, spec: EngineSpec):
        import torch

        self.spec = spec
        self.settings = settings = spec.transformers
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model_kwargs = {}
        if settings.load_in_4bit:
            model_kwargs = self._four_bit_kwargs()
        name, field, gguf_file = spec.tokenizer_source
        self.tokenizer = load_tokenizer(name, field=field, gguf_file=gguf_file,
                                        trust_remote_code=spec.trust_remote_code, padding_side="left")
        self.model = load_causal_lm(
            spec.model, field=spec.field("model"), gguf_file=spec.gguf_file,
            dtype=torch_dtype(spec.dtype, self.device), trust_remote_code=spec.trust_remote_code, **model_kwargs,
        )
        if not settings.load_in_4bit:
            self.model.to(self.device)
        self.model.eval()
        auto = settings.compile_decode == "auto"
        self._compile_by_job_size = auto and self.device == "cuda" and not settings.load_in_4bit
        self.compile_decode = self._compile_by_job_size if auto else settings.compile_decode
        if self.compile_decode is True or self._compile_by_job_size:
            use_persistent_compile_cache()
        if self.model.config._attn_implementation == "sdpa" and not settings.continuous_batching:
            # One-token decode steps attend on the key/value heads instead of copying the KV cache per query head.
            self.model.set_attn_implementation(register_decode_attention())
        self._stop_ids = self._eos_ids()
        # Ids dropped from completions: padding and end-of-sequence markers. Other special tokens
        # (Bonito's <|pipe|> is one) are kept, because the parser needs them.
        self._drop_ids = set(self._stop_ids) | {i for i in (self.tokenizer.pad_token_id, self.tokenizer.bos_token_id)
                                                if i is not None}

    def expect_job(self, generated_tokens: int) -> None:
        """Told by the generate stage how many tokens the whole job will generate: `compile_decode: auto`
        compiles only when that repays the compile (COMPILE_MIN_TOKENS)."""
        if self._compile_by_job_size:
            self.compile_decode = generated_tokens >= COMPILE_MIN_TOKENS
            if not self.compile_decode:
                logger.info("compile_decode auto: %d tokens to generate, below %d: not compiling", generated_tokens,
                            COMPILE_MIN_TOKENS)

    def _four_bit_kwargs(self) -> dict:
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"{self.spec.field('load_in_4bit')} needs a CUDA GPU (bitsandbytes 4-bit); set "
                            "load_in_4bit: false on this machine")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise missing_extra("bitsandbytes", "train")
        from transformers import BitsAndBytesConfig

        dtype = self.spec.dtype
        compute = torch.float32 if dtype == "float32" else torch_dtype("bfloat16" if dtype == "auto" else dtype, "cuda")
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

    @property
    def continuous_batching(self) -> bool:
        """Whether `generate` uses transformers' continuous batching (see GenerateConfig.continuous_batching)."""
        return bool(self.settings.continuous_batching)

    def encode(self, prompt: str) -> list[int]:
        """Prompt token ids; a chat-templated prompt already starts with BOS, so no second one is added."""
        bos = self.tokenizer.bos_token
        return self.tokenizer(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))["input_ids"]

    def _decode(self, token_ids) -> str:
        kept = []
        for token_id in token_ids:
            if token_id in self._stop_ids:
                break
            if token_id not in self._drop_ids:
                kept.append(token_id)
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[list[str]]:
        """`sampling.n` completions per prompt, in prompt order; text after the prompt only."""
        completions = self.generate_token_ids([self.encode(p) for p in prompts], sampling)
        return [[self._decode(ids) for ids in per_prompt] for per_prompt in completions]

    def generate_token_ids(self, prompt_ids: list[list[int]], sampling: SamplingConfig,
                           ignore_eos: bool = False) -> list[list[list[int]]]:
        """`sampling.n` lists of new token ids per prompt, in prompt order.

        `ignore_eos` generates exactly `sampling.max_tokens` tokens (benchmarks: same work every run).
        """
        import torch

        if not prompt_ids:
            return []
        greedy = sampling.temperature == 0
        # Greedy decoding gives one answer; n copies of it keep the n-per-prompt contract.
        per_prompt = 1 if greedy else sampling.n
        options = {"max_new_tokens": sampling.max_tokens, "do_sample": not greedy, "num_return_sequences": per_prompt,
                   "eos_token_id": self._stop_ids, "pad_token_id": self._pad_id(), "top_k": None,
                   "temperature": None if greedy else sampling.temperature, "top_p": None if greedy else sampling.top_p}
        if ignore_eos:
            options["min_new_tokens"] = sampling.max_tokens
        from torch._dynamo.exc import TorchDynamoException

        torch.manual_seed(sampling.seed)
        if self.continuous_batching:
            # Not under inference_mode: the batching thread updates its static tensors in place.
            results = self._generate_continuous(prompt_ids, options, sampling.seed, per_prompt)
        else:
            with torch.inference_mode():
                try:
                    results = self._generate_padded(prompt_ids, options, per_prompt)
                except TorchDynamoException as error:
                    if not self.compile_decode:
                        raise
                    # A compiler problem (no C compiler for Triton, an unsupported op) should not stop
                    # the stage: the same batches run uncompiled, reseeded, so results stay reproducible.
                    field = self.spec.field("compile_decode")
                    logger.warning("%s: torch.compile failed (%s); generating uncompiled (set %s: false to skip "
                                   "the attempt)", field, str(error).strip().splitlines()[0][:200], field)
                    self.compile_decode = False
                    torch.manual_seed(sampling.seed)
                    results = self._generate_padded(prompt_ids, options, per_prompt)
        return [r * sampling.n if greedy else r for r in results]

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self._stop_ids[0]

    def _generate_padded(self, prompt_ids: list[list[int]], options: dict, per_prompt: int) -> list[list[list[int]]]:
        """Length-sorted batches of `batch_size` prompts, left-padded to the longest of each batch."""
        import torch

        order = sorted(range(len(prompt_ids)), key=lambda i: (-len(prompt_ids[i]), i))
        results: list[list[list[int]]] = [[] for _ in prompt_ids]
        batch_size = self.settings.batch_size
        static_cache = None
        if self.compile_decode:
            cache_length = self._cache_length(max(map(len, prompt_ids)) + options["max_new_tokens"])
            options = {**options, **self._compile_options(cache_length)}
            # One cache for every batch of this call (same rows, same length): allocated once, and the
            # compiled step keeps reading the same addresses.
            static_cache = self._static_cache(cache_length)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            rows = list(batch)
            if self.compile_decode:
                # A short last batch is filled up with copies of its shortest prompt (outputs dropped):
                # the compiled decode step keeps one shape instead of compiling again.
                rows += [batch[-1]] * (batch_size - len(batch))
            width = max(len(prompt_ids[i]) for i in rows)
            input_ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, index in enumerate(rows):
                ids = prompt_ids[index]
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids):] = 1
            input_ids, attention_mask = input_ids.to(self.model.device), attention_mask.to(self.model.device)
            call = options
            if static_cache is not None:
                call = self._prefilled(static_cache, input_ids, attention_mask, per_prompt, options)
                if call is not options:  # prompts were expanded to n rows each, and the cache holds them
                    input_ids = input_ids.repeat_interleave(per_prompt, dim=0)
                    attention_mask = attention_mask.repeat_interleave(per_prompt, dim=0)
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **self._warped(call))
            new_tokens = output[:, width:].tolist()
            for row, index in enumerate(batch):
                results[index] = new_tokens[row * per_prompt:(row + 1) * per_prompt]
        return results

    def _warped(self, options: dict) -> dict:
        """generate() options with temperature and top-p done by `NucleusWarper` (same filter, cheaper sort),
        where nothing else in the generation config changes logits; otherwise unchanged."""
        if not options.get("do_sample") or not plain_sampling(self.model.generation_config, options):
            return options
        from transformers import LogitsProcessorList

        warper = NucleusWarper(options["temperature"], options["top_p"])
        return {**options, "temperature": 1.0, "top_p": 1.0, "logits_processor": LogitsProcessorList([warper])}

    @staticmethod
    def _cache_length(longest: int) -> int:
        """Static cache length in steps of 256 tokens: calls with a slightly longer prompt reuse the compiled step."""
        return -(-longest // 256) * 256

    def _compile_options(self, cache_length: int) -> dict:
        """generate() options for a static KV cache and a compiled decode step (transformers' own fast path)."""
        from transformers import CompileConfig, GenerationConfig

        compile_config = CompileConfig()
        if self.device != "cuda":
            compile_config._compile_all_devices = True  # transformers compiles only on accelerators by default
        options = {"cache_implementation": "static", "compile_config": compile_config}
        if hasattr(GenerationConfig(), "max_cache_len"):  # transformers >= 5.20
            options["max_cache_len"] = cache_length
        return options

    def _static_cache(self, cache_length: int):
        """An empty static cache for `_prefilled`, or None where its layers are not plain full attention
        (sliding windows; transformers < 4.56): there generate() prefills and allocates its own."""
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        cache = StaticCache(config=self.model.config, max_cache_len=cache_length)
        layers = getattr(cache, "layers", None)
        if not layers or not all(type(layer) is StaticLayer and hasattr(layer, "cumulative_length") for layer in layers):
            return None
        return cache

    def _prefilled(self, cache, input_ids, attention_mask, per_prompt: int, options: dict) -> dict:
        """generate() options with `cache` holding all but each prompt's last token.

        generate() would prefill the whole padded batch in one forward: a large batch's prompts of
        mixed lengths are mostly padding (256 prompts of 64-1024 tokens: 60% padding), and the
        activations of that forward must fit beside the full-length static cache. Prefilling groups
        of similar-length rows (the batch is sorted) costs only their own padding and a bounded
        amount of memory; the keys and values go to the rows' places in the cache (each row's
        tokens end at the same column, as in the left-padded batch), and generate() continues from
        the cache with the last prompt token, as it does for a reused prompt cache.

        The prefill forward stays eager: compiled for dynamic shapes it cost minutes of compile
        (whole model) or ran slower (layer by layer), measured in docs/performance.md.
        """
        from transformers import DynamicCache

        layers = cache.layers
        cache.reset()  # the previous batch's keys and values (a no-op before the first)
        cache_kwarg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        rows, width = input_ids.shape
        lengths = attention_mask.sum(dim=1).tolist()
        start = 0
        while start < rows:
            group_width = int(lengths[start])  # rows are sorted longest first
            end = min(rows, start + max(1, PREFILL_TOKENS // group_width))
            columns = slice(width - group_width, width - 1)  # the last column is generate()'s first step
            mask = attention_mask[start:end, columns]
            if mask.shape[1]:
                part = DynamicCache(config=self.model.config)
                self.model(input_ids=input_ids[start:end, columns], attention_mask=mask,
                           position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1,
                           **{cache_kwarg: part})
                if not layers[0].is_initialized:  # shapes, dtype and device from the first filled group
                    keys = part.layers[0].keys
                    cache.early_initialization(batch_size=rows * per_prompt, num_heads=keys.shape[1],
                                               head_dim=keys.shape[-1], dtype=keys.dtype, device=keys.device)
                rows_out = slice(start * per_prompt, end * per_prompt)
                for layer, filled in zip(layers, part.layers, strict=True):
                    layer.keys[rows_out, :, columns] = filled.keys.repeat_interleave(per_prompt, dim=0)
                    layer.values[rows_out, :, columns] = filled.values.repeat_interleave(per_prompt, dim=0)
                del part
            start = end
        if width == 1:  # one-token prompts: nothing to prefill
            return options
        for layer in layers:
            layer.cumulative_length.fill_(width - 1)
        call = {key: value for key, value in options.items() if key not in ("cache_implementation", "max_cache_len")}
        return {**call, "num_return_sequences": 1, cache_kwarg: cache}

    def _generate_continuous(self, prompt_ids: list[list[int]], options: dict, seed: int,
                             per_prompt: int) -> list[list[list[int]]]:
        """transformers' continuous batching: every prompt is a request in one paged-KV scheduler."""
        from transformers import GenerationConfig
        from transformers.generation import ContinuousBatchingConfig

        generation_config = GenerationConfig(**options)
        sizing = {}
        if self.device == "cpu":
            # transformers sizes the paged cache from free memory, which on a CPU means many GB of RAM
            # allocated per call: give it what these requests need instead.
            page = ContinuousBatchingConfig().page_size
            pages = sum(-(-(len(ids) + options["max_new_tokens"]) // page) for ids in prompt_ids) * per_prompt
            sizing = {"num_blocks": pages + 1, "max_batch_tokens": 512}
        outputs = self.model.generate_batch(
            prompt_ids, generation_config=generation_config,
            continuous_batching_config=ContinuousBatchingConfig(seed=seed, **sizing),
            progress_bar=False, warmup=self.device == "cuda",  # CUDA-graph capture pays off only on a GPU
        )
        # Request ids are `req_<i>` (prompt i in submission order) and `req_<i>__child#<k>` for samples 2..n.
        by_prompt: dict[int, dict[int, list[int]]] = {}
        for request_id, output in outputs.items():
            if output.error:
                raise RuntimeError(f"continuous batching failed on {request_id}: {output.error}")
            head, _, child = request_id.partition("__child#")
            by_prompt.setdefault(int(head.removeprefix("req_")), {})[int(child) + 1 if child else 0] = \
                list(output.generated_tokens)
        first = min(by_prompt)  # ids count from the manager's first request
        results = []
        for offset in range(len(prompt_ids)):
            samples = by_prompt.get(first + offset, {})
            if len(samples) != per_prompt:
                raise RuntimeError(f"continuous batching returned {len(samples)} of {per_prompt} samples "
                                   f"for prompt {offset}")
            results.append([samples[k] for k in sorted(samples)])
        return results

    def close(self) -> None:
        import torch

        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
