"""The vLLM engine on the real library and a GPU (skipped elsewhere): construction, token counts, context,
n > 1 ordering, seeds, several shards per call, `<|pipe|>` through vLLM's detokenizer, GGUF, and
close() giving the GPU back.

    BONITO_ADAPT_GPU_SMALL_MODEL=/tmp/smollm2   # a real model folder (SmolLM2-135M-Instruct)
    BONITO_ADAPT_GPU_GGUF=/tmp/smollm2.gguf     # optional: its GGUF file
    python -m pytest -m gpu tests/engines/test_vllm_gpu.py -s

Run on the device on 2026-12-02 and 2026-12-04 (vLLM 0.26.0, torch 2.11, one H200): docs/performance.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

MODEL = os.environ.get("BONITO_ADAPT_GPU_SMALL_MODEL")
GGUF = os.environ.get("BONITO_ADAPT_GPU_GGUF")


def _skip_without_gpu_and_vllm():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("vllm")
    if not MODEL:
        pytest.skip("set BONITO_ADAPT_GPU_SMALL_MODEL to a real model folder")


def _spec(model: str = "", **fields):
    from bonito_adapt.engines.spec import EngineSpec

    vllm = {"gpu_memory_utilization": 0.25, "max_model_len": 2048, "enforce_eager": True, **fields.pop("vllm", {})}
    return EngineSpec(model=model or MODEL, dtype="bfloat16", vllm=vllm, **fields)


@pytest.fixture(scope="module")
def engine():
    _skip_without_gpu_and_vllm()
    from bonito_adapt.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(_spec())
    yield engine
    engine.close()


PROMPTS = ["The contract says the receiving party shall", "Employees may work remotely",
           "Refunds of annual plans are given"]


def test_context_and_token_counts_are_the_models(engine):
    from transformers import AutoTokenizer

    assert engine.max_context == 2048
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    for text in PROMPTS:
        assert engine.count_tokens(text) == len(tokenizer.encode(text, add_special_tokens=False))


def test_n_samples_come_per_prompt_and_a_seed_repeats_them(engine):
    from bonito_adapt.engines.spec import SamplingConfig

    sampling = SamplingConfig(n=4, temperature=1.0, top_p=0.95, max_tokens=16, seed=7)
    first = engine.generate(PROMPTS, sampling)
    assert [len(samples) for samples in first] == [4, 4, 4]
    assert all(len(set(samples)) > 1 for samples in first)  # four different samples, not one repeated
    assert engine.generate(PROMPTS, sampling) == first
    assert engine.generate(PROMPTS, sampling.model_copy(update={"seed": 8})) != first


def test_several_shards_in_one_call_sample_as_separate_calls(engine):
    """What the generate stage does with vLLM (shards in flight together): each shard keeps its seed."""
    from bonito_adapt.engines.spec import SamplingConfig

    a = SamplingConfig(n=2, temperature=1.0, max_tokens=16, seed=3)
    b = SamplingConfig(n=2, temperature=1.0, max_tokens=16, seed=4)
    together = engine.generate_many([(PROMPTS[:2], a), (PROMPTS[2:], b)])
    apart = [engine.generate(PROMPTS[:2], a), engine.generate(PROMPTS[2:], b)]
    same = sum(x == y for group_t, group_a in zip(together, apart, strict=True)
               for x, y in zip(group_t, group_a, strict=True))
    # vLLM is not batch-invariant in bf16: a near-tie can sample differently in another batch; most agree.
    print(json.dumps({"generate_many_same_as_separate": f"{same}/3"}))
    assert same >= 2


def _tokenizer_with_pipe(folder: Path, special: bool) -> tuple[Path, int]:
    """A copy of the model folder whose tokenizer holds `<|pipe|>` as an added token (special or not), in
    place of an unused added token of the same id, so the model's vocabulary size stays as it is."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in Path(MODEL).iterdir():
        target = folder / item.name
        if item.name in ("tokenizer.json", "tokenizer_config.json"):
            continue
        if not target.exists():
            target.symlink_to(item.resolve())
    data = json.loads((Path(MODEL) / "tokenizer.json").read_text(encoding="utf-8"))
    victim = next(t for t in data["added_tokens"] if t["content"] not in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    old = victim["content"]
    victim.update(content="<|pipe|>", special=special)
    vocab = data["model"]["vocab"]
    vocab["<|pipe|>"] = vocab.pop(old)
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    config = json.loads((Path(MODEL) / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key in ("added_tokens_decoder",):
        for entry in (config.get(key) or {}).values():
            if entry.get("content") == old:
                entry.update(content="<|pipe|>", special=special)
    config["additional_special_tokens"] = [t for t in config.get("additional_special_tokens") or [] if t != old]
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder, victim["id"]


@pytest.mark.parametrize("special", [True, False])
def test_the_pipe_token_survives_decoding(tmp_path, monkeypatch, special):
    """The model is made to write `<|pipe|>` (allowed_token_ids); the engine's text must hold it whether the
    tokenizer marks it special or not, or every Bonito generation would fail to parse."""
    _skip_without_gpu_and_vllm()
    from bonito_adapt.engines import vllm_engine
    from bonito_adapt.engines.spec import SamplingConfig
    from bonito_adapt.generate.task_format import TaskFormat

    folder, pipe_id = _tokenizer_with_pipe(tmp_path / "model", special)
    real = vllm_engine.sampling_params_kwargs
    monkeypatch.setattr(vllm_engine, "sampling_params_kwargs",
                        lambda s, keep=False: {**real(s, keep), "allowed_token_ids": [pipe_id]})
    engine = vllm_engine.VLLMEngine(_spec(str(folder)))
    try:
        assert engine.keep_special_tokens is special
        text = engine.generate(["Write the separator:"], SamplingConfig(n=1, temperature=0.0, max_tokens=1))[0][0]
    finally:
        engine.close()
    print(json.dumps({"pipe_special": special, "text": text}))
    assert text.strip() == "<|pipe|>"
    parsed = TaskFormat("bonito", "nli").parse(f"Does it hold?{text}yes", "a passage")
    assert parsed == ("Does it hold?", "yes")


def test_gguf_checkpoint_loads_and_generates_or_is_refused_in_one_line():
    """vLLM 0.26.0 has no GGUF loader (removed upstream): there the engine must refuse with a UserError before
    vLLM fails on the file; a vLLM that has one (or the GGUF plugin) must load it and generate."""
    _skip_without_gpu_and_vllm()
    if not GGUF:
        pytest.skip("set BONITO_ADAPT_GPU_GGUF to the model's GGUF file")
    from bonito_adapt.engines.spec import SamplingConfig
    from bonito_adapt.engines.vllm_engine import VLLMEngine, vllm_loads_gguf
    from bonito_adapt.errors import UserError

    if not vllm_loads_gguf():
        with pytest.raises(UserError, match="cannot load GGUF files"):
            VLLMEngine(_spec(MODEL, gguf_file=GGUF))
        return
    engine = VLLMEngine(_spec(MODEL, gguf_file=GGUF))
    try:
        texts = engine.generate(PROMPTS[:1], SamplingConfig(n=1, temperature=0.0, max_tokens=8))
    finally:
        engine.close()
    assert texts[0][0].strip()


def test_close_gives_the_gpu_back_for_a_train_stage_next():
    _skip_without_gpu_and_vllm()
    import torch

    from bonito_adapt.engines.spec import SamplingConfig
    from bonito_adapt.engines.vllm_engine import VLLMEngine

    torch.cuda.synchronize()
    free_before, _ = torch.cuda.mem_get_info()
    engine = VLLMEngine(_spec(vllm={"gpu_memory_utilization": 0.5}))
    engine.generate(PROMPTS[:1], SamplingConfig(max_tokens=4))
    free_during, total = torch.cuda.mem_get_info()
    engine.close()
    torch.cuda.synchronize()
    free_after, _ = torch.cuda.mem_get_info()
    print(json.dumps({"free_gib": [round(x / 2**30, 1) for x in (free_before, free_during, free_after)]}))
    assert free_before - free_during > 0.3 * total  # it really held half the GPU
    assert free_before - free_after < 2 * 2**30  # and gave it back
