"""The transformers engine on tiny random models (CPU)."""

from __future__ import annotations

import pytest
import torch

from bonito_adapt.engines import Engine
from bonito_adapt.engines.spec import EngineSpec, SamplingConfig
from bonito_adapt.engines.transformers_engine import TransformersEngine
from bonito_adapt.errors import UserError

PROMPTS = ["the contract", "party shall not disclose confidential information to anyone",
           "yes no maybe", "notice of the term of this agreement in writing"]


def _config(model_dir, **settings) -> EngineSpec:
    return EngineSpec(model=str(model_dir), transformers=settings)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = TransformersEngine(_config(tiny_model_dir, batch_size=2))
    yield engine
    engine.close()


def test_engine_satisfies_the_interface(engine):
    assert isinstance(engine, Engine)
    assert engine.max_context == 1024  # the tiny model's max_position_embeddings
    assert engine.count_tokens("the contract") == len(engine.tokenizer("the contract", add_special_tokens=False)
                                                      ["input_ids"])
    assert next(engine.model.parameters()).dtype == torch.float32  # dtype auto on CPU


def test_n_samples_per_prompt_seeded(engine):
    sampling = SamplingConfig(n=3, temperature=1.0, top_p=0.95, max_tokens=6, seed=7)
    first = engine.generate(PROMPTS, sampling)
    assert [len(samples) for samples in first] == [3, 3, 3, 3]
    assert all(isinstance(text, str) for samples in first for text in samples)
    assert engine.generate(PROMPTS, sampling) == first  # same seed, same completions
    assert engine.generate(PROMPTS, sampling.model_copy(update={"seed": 8})) != first


def test_greedy_gives_n_identical_answers(engine):
    samples = engine.generate(PROMPTS[:2], SamplingConfig(n=2, temperature=0.0, max_tokens=5))
    assert all(len(s) == 2 and s[0] == s[1] for s in samples)


def test_results_follow_prompt_order_across_sorted_batches(engine):
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=5)
    forward = engine.generate(PROMPTS, greedy)
    # Distinct prompt lengths: both orders form the same length-sorted batches, so only the mapping differs.
    assert len({engine.count_tokens(p) for p in PROMPTS}) == len(PROMPTS)
    assert engine.generate(PROMPTS[::-1], greedy) == forward[::-1]


def test_batches_are_length_sorted_and_left_padded(engine, monkeypatch):
    seen = []
    original = engine.model.generate

    def recording_generate(**kwargs):
        seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))
        return original(**kwargs)

    monkeypatch.setattr(engine.model, "generate", recording_generate)
    engine.generate(PROMPTS, SamplingConfig(n=1, temperature=0.0, max_tokens=2))
    assert len(seen) == 2  # batch_size 2
    real_lengths = [int(mask.sum(dim=1).max()) for _, mask in seen]
    assert real_lengths == sorted(real_lengths, reverse=True)
    for input_ids, mask in seen:
        assert bool((mask[:, -1] == 1).all())  # left padding: every row ends with a real token
        padded = mask == 0
        assert bool((input_ids[padded] == engine.tokenizer.pad_token_id).all())


def test_chat_prompt_gets_no_second_bos(engine, monkeypatch):
    seen = []
    original = engine.model.generate

    def recording_generate(**kwargs):
        seen.append(kwargs["input_ids"][0].tolist())
        return original(**kwargs)

    monkeypatch.setattr(engine.model, "generate", recording_generate)
    bos = engine.tokenizer.bos_token
    engine.generate([bos + "the contract"], SamplingConfig(n=1, temperature=0.0, max_tokens=1))
    assert seen[0].count(engine.tokenizer.bos_token_id) == 1


def test_pipe_special_token_survives_decoding_but_eos_and_pad_do_not(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Like the real Bonito tokenizer: <|pipe|> is an added *special* token.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|pipe|>"]})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    engine = TransformersEngine(_config(tmp_path))
    pipe_id = engine.tokenizer.convert_tokens_to_ids("<|pipe|>")
    assert pipe_id in engine.tokenizer.all_special_ids
    answer = (engine.tokenizer("the contract", add_special_tokens=False)["input_ids"] + [pipe_id]
              + engine.tokenizer(" yes", add_special_tokens=False)["input_ids"])
    tail = [engine.tokenizer.eos_token_id, engine.tokenizer.pad_token_id, pipe_id]  # after EOS: ignored

    def scripted_generate(input_ids, attention_mask, **kwargs):
        rows = input_ids.shape[0] * kwargs["num_return_sequences"]
        new = torch.tensor([answer + tail] * rows)
        return torch.cat([input_ids.repeat_interleave(kwargs["num_return_sequences"], dim=0), new], dim=1)

    monkeypatch.setattr(engine.model, "generate", scripted_generate)
    samples = engine.generate(["a prompt", "another prompt here"], SamplingConfig(n=2, temperature=0.7))
    assert samples == [["the contract<|pipe|> yes"] * 2] * 2


def test_four_bit_without_cuda_is_a_one_line_error(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="load_in_4bit needs a CUDA GPU") as error:
        TransformersEngine(_config(tiny_model_dir, load_in_4bit=True))
    assert "\n" not in str(error.value)


def test_missing_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        TransformersEngine(_config(tmp_path / "nope"))


# ------------------------------------------------------------------ continuous batching (opt-in)


def test_continuous_batching_is_off_by_default(engine):
    assert engine.settings.continuous_batching is False and engine.continuous_batching is False


def test_continuous_batching_gives_the_padded_batches_greedy_answers(tiny_model_dir, engine):
    continuous = TransformersEngine(_config(tiny_model_dir, continuous_batching=True))
    assert continuous.continuous_batching is True
    greedy = SamplingConfig(n=2, temperature=0.0, max_tokens=6)
    assert continuous.generate(PROMPTS, greedy) == engine.generate(PROMPTS, greedy)


def test_continuous_batching_returns_n_seeded_samples_in_prompt_order(tiny_model_dir):
    continuous = TransformersEngine(_config(tiny_model_dir, continuous_batching=True))
    sampling = SamplingConfig(n=3, temperature=1.0, top_p=1.0, max_tokens=5, seed=3)
    ids = [continuous.encode(p) for p in PROMPTS]
    first = continuous.generate_token_ids(ids, sampling, ignore_eos=True)
    assert [len(samples) for samples in first] == [3] * len(PROMPTS)
    assert all(len(sample) == 5 for samples in first for sample in samples)  # ignore_eos: exactly max_tokens
    assert len({tuple(s) for samples in first for s in samples}) > len(PROMPTS)  # samples differ
    assert continuous.generate_token_ids(ids, sampling, ignore_eos=True) == first  # same seed, same samples
    # Results follow the prompt, not the scheduler: reversed prompts give reversed greedy answers.
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=4)
    assert continuous.generate_token_ids(ids[::-1], greedy) == continuous.generate_token_ids(ids, greedy)[::-1]


# ------------------------------------------------------------------ decode attention, compiled decode


def test_engine_decodes_with_gqa_on_the_key_value_heads(engine):
    assert engine.model.config._attn_implementation == "sdpa_decode"


def test_decode_attention_equals_sdpa_with_repeated_kv_under_a_padding_mask():
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import repeat_kv

    from bonito_adapt.engines.transformers_engine.decode_attention import decode_attention_forward

    torch.manual_seed(0)
    batch, heads, kv_heads, keys, dim = 3, 8, 2, 11, 16
    query = torch.randn(batch, heads, 1, dim)
    key, value = torch.randn(batch, kv_heads, keys, dim), torch.randn(batch, kv_heads, keys, dim)
    mask = torch.ones(batch, 1, 1, keys, dtype=torch.bool)
    mask[0, ..., :4] = False  # left padding of different widths
    mask[2, ..., :9] = False
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, training=False, is_causal=True)
    out, _ = decode_attention_forward(module, query, key, value, mask, scaling=0.25)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(key, 4), repeat_kv(value, 4), attn_mask=mask, scale=0.25).transpose(1, 2)
    assert out.shape == (batch, 1, heads, dim)
    torch.testing.assert_close(out, expected)


def test_compiled_decode_gives_the_eager_greedy_answers(tiny_model_dir, engine):
    # torch.compile of the decode step on CPU (transformers' static cache path); batch 3 of 4 prompts
    # leaves a short last batch, which is filled up to keep one compiled shape.
    compiled = TransformersEngine(_config(tiny_model_dir, batch_size=3, compile_decode=True))
    greedy = SamplingConfig(n=2, temperature=0.0, max_tokens=6)
    assert compiled.generate(PROMPTS, greedy) == engine.generate(PROMPTS, greedy)
    ids = [compiled.encode(p) for p in PROMPTS]
    sampling = SamplingConfig(n=2, temperature=1.0, top_p=0.9, max_tokens=5, seed=1)
    first = compiled.generate_token_ids(ids, sampling, ignore_eos=True)
    assert [[len(s) for s in samples] for samples in first] == [[5, 5]] * len(PROMPTS)
    assert compiled.generate_token_ids(ids, sampling, ignore_eos=True) == first


def test_compiled_decode_prefills_similar_length_groups_into_the_static_cache(tiny_model_dir, engine, monkeypatch):
    import functools

    from transformers import DynamicCache

    from bonito_adapt.engines.transformers_engine import engine as transformers_engine

    monkeypatch.setattr(transformers_engine, "PREFILL_TOKENS", 12)  # a few rows per prefill forward
    compiled = TransformersEngine(_config(tiny_model_dir, batch_size=4, compile_decode=True))
    prefills, calls = [], []
    real_forward, real_generate = compiled.model.forward, compiled.model.generate

    @functools.wraps(real_forward)  # keeps the signature the engine reads
    def forward(**kwargs):
        if any(isinstance(value, DynamicCache) for value in kwargs.values()):  # the engine's prefill, not generate's
            prefills.append(kwargs["input_ids"].shape)
        return real_forward(**kwargs)

    monkeypatch.setattr(compiled.model, "forward", forward)
    monkeypatch.setattr(compiled.model, "generate", lambda **kw: calls.append(kw) or real_generate(**kw))
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=5)
    assert compiled.generate(PROMPTS, greedy) == engine.generate(PROMPTS, greedy)
    lengths = sorted((len(compiled.encode(p)) for p in PROMPTS), reverse=True)
    assert len(prefills) > 1 and prefills[0][1] == lengths[0] - 1  # groups, each as wide as its longest row
    assert sum(shape[0] for shape in prefills) == len(PROMPTS)
    assert "cache_implementation" not in calls[0]  # generate() continues from the filled cache
    # n samples per prompt: the prompt is prefilled once and its cache rows repeated.
    ids = [compiled.encode(p) for p in PROMPTS]
    sampling = SamplingConfig(n=3, temperature=1.0, top_p=0.9, max_tokens=4, seed=2)
    samples = compiled.generate_token_ids(ids, sampling, ignore_eos=True)
    assert [[len(s) for s in per] for per in samples] == [[4, 4, 4]] * len(PROMPTS)
    assert compiled.generate_token_ids(ids, sampling, ignore_eos=True) == samples


def test_compile_decode_auto_is_on_only_for_a_cuda_gpu(engine):
    assert engine.settings.compile_decode == "auto" and engine.compile_decode is False  # CPU


def test_a_failing_compile_falls_back_to_uncompiled_generation(tiny_model_dir, engine, monkeypatch, caplog):
    from torch._dynamo.exc import BackendCompilerFailed

    compiled = TransformersEngine(_config(tiny_model_dir, batch_size=2, compile_decode=True))
    real_generate = compiled.model.generate

    def no_compiler(**kwargs):
        if "compile_config" in kwargs:
            raise BackendCompilerFailed(lambda *a: None, RuntimeError("Failed to find C compiler"), None)
        return real_generate(**kwargs)

    monkeypatch.setattr(compiled.model, "generate", no_compiler)
    sampling = SamplingConfig(n=2, temperature=1.0, top_p=0.9, max_tokens=4, seed=5)
    with caplog.at_level("WARNING"):
        assert compiled.generate(PROMPTS, sampling) == engine.generate(PROMPTS, sampling)
    assert compiled.compile_decode is False
    assert "torch.compile failed" in caplog.text and "compile_decode: false" in caplog.text


@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 2), (4, 4)])  # grouped-query and multi-head
def test_flex_decode_reads_only_the_attended_blocks_and_equals_sdpa(heads, kv_heads, monkeypatch):
    # A static cache of 3 blocks: row 0 attends to all of it, row 1 starts in block 1, row 2 only
    # reaches into block 2 (its first two blocks are padding, never read), row 3 attends to nothing yet.
    from torch.nn.attention import flex_attention as flex

    from bonito_adapt.engines.transformers_engine.decode_attention import DECODE_BLOCK, flex_decode_attention

    torch.manual_seed(0)
    batch, dim = 4, 16
    keys = 3 * DECODE_BLOCK
    query = torch.randn(batch, heads, 1, dim)
    key, value = torch.randn(batch, kv_heads, keys, dim), torch.randn(batch, kv_heads, keys, dim)
    position = torch.arange(keys)
    first = torch.tensor([0, DECODE_BLOCK + 5, 2 * DECODE_BLOCK + 3, keys])
    newest = 2 * DECODE_BLOCK + 40  # positions after it are not generated yet
    keep = (position >= first[:, None]) & (position <= newest)
    seen = []
    real = flex.flex_attention
    monkeypatch.setattr(flex, "flex_attention",
                        lambda *a, block_mask, **kw: seen.append(block_mask) or real(*a, block_mask=block_mask, **kw))
    out = torch.compile(flex_decode_attention, fullgraph=True)(query, key, value, keep, 0.25)
    eager = flex_decode_attention(query, key, value, keep, 0.25)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=keep[:, None, None, :], scale=0.25, enable_gqa=True).transpose(1, 2)
    expected[3] = 0  # a row with nothing to attend to gives zeros, not NaN
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(eager, expected)
    block_mask = seen[-1]
    visited = (block_mask.kv_num_blocks + block_mask.full_kv_num_blocks).flatten().tolist()
    assert visited == [3, 2, 1, 0]


def test_compiled_engine_decodes_through_flex_attention(tiny_model_dir, engine, monkeypatch):
    from bonito_adapt.engines.transformers_engine import decode_attention as attention

    traced = []
    real = attention.flex_decode_attention
    monkeypatch.setattr(attention, "flex_decode_attention", lambda *a: traced.append(a[1].shape) or real(*a))
    compiled = TransformersEngine(_config(tiny_model_dir, batch_size=4, compile_decode=True))
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=5)
    assert compiled.generate(PROMPTS, greedy) == engine.generate(PROMPTS, greedy)
    assert traced and traced[0][2] % attention.DECODE_BLOCK == 0  # the compiled step's attention, over the static cache


# ------------------------------------------------------------------ nucleus sampling


def _transformers_top_p(scores, temperature, top_p):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    return TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("temperature", "top_p"), [(0.5, 0.95), (0.7, 0.9), (1.0, 0.3), (1.3, 1.0)])
def test_nucleus_warper_equals_transformers_temperature_and_top_p(dtype, temperature, top_p):
    from bonito_adapt.engines.transformers_engine.nucleus import NucleusWarper

    torch.manual_seed(0)
    # Logits as a model returns them (in its dtype, then float32), some masked out as min_new_tokens does.
    scores = (torch.randn(6, 3000) * 2).to(dtype).float()
    scores[:, :3] = -float("inf")
    scores[0] = scores[0].sort().values  # sorted input and a one-hot-like row are edge cases too
    scores[1, 7] = 40.0
    warper = NucleusWarper(temperature, top_p)
    out = warper(None, scores.clone())
    assert warper._key_dtype == (dtype if top_p < 1 else None)  # 16-bit logits sort as 16-bit keys
    expected = _transformers_top_p(scores, temperature, top_p)
    # Kept values are transformers' values; the only extra tokens kept are ties of the lowest kept
    # score, which transformers splits by sort position (16-bit logits tie often).
    kept, kept_there = torch.isfinite(out), torch.isfinite(expected)
    assert (kept_there & ~kept).sum() == 0
    torch.testing.assert_close(out[kept_there], expected[kept_there])
    lowest = out.masked_fill(~kept, float("inf")).min(dim=-1, keepdim=True).values
    assert torch.equal(out[kept & ~kept_there], lowest.expand_as(out)[kept & ~kept_there])
    if dtype == torch.float32:  # no ties: the same filter exactly
        torch.testing.assert_close(out, expected)


def test_nucleus_warper_keeps_every_token_tied_with_the_last_kept_one():
    from bonito_adapt.engines.transformers_engine.nucleus import NucleusWarper

    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, -9.0]])  # 4 equal tokens: top_p 0.5 needs 2 of them
    out = NucleusWarper(1.0, 0.5)(None, scores)
    assert torch.isfinite(out[0, :4]).all() and out[0, 4] == -float("inf")
    assert torch.isfinite(_transformers_top_p(scores, 1.0, 0.5)[0]).sum() in (2, 3)  # by sort position


def test_engine_samples_through_the_nucleus_warper_with_transformers_draws(tiny_model_dir, monkeypatch):
    # Same seed, same tokens as transformers' own warpers: the filter is the same and the draw is transformers'.
    from bonito_adapt.engines.transformers_engine import engine as transformers_engine

    sampling = SamplingConfig(n=3, temperature=0.7, top_p=0.9, max_tokens=6, seed=4)
    engine = TransformersEngine(_config(tiny_model_dir, batch_size=2))
    warped = []
    real = engine._warped
    monkeypatch.setattr(engine, "_warped", lambda options: warped.append(real(options)) or warped[-1])
    ours = engine.generate(PROMPTS, sampling)
    assert "logits_processor" in warped[0] and warped[0]["top_p"] == 1.0
    monkeypatch.setattr(transformers_engine, "plain_sampling", lambda *a: False)
    assert engine.generate(PROMPTS, sampling) == ours


def test_generation_config_with_a_repetition_penalty_keeps_transformers_warpers(tiny_model_dir):
    from bonito_adapt.engines.transformers_engine.nucleus import plain_sampling

    engine = TransformersEngine(_config(tiny_model_dir, batch_size=2))
    options = {"do_sample": True, "temperature": 0.5, "top_p": 0.95, "top_k": None}
    assert plain_sampling(engine.model.generation_config, options)
    engine.model.generation_config.repetition_penalty = 1.2
    assert not plain_sampling(engine.model.generation_config, options)
    assert engine._warped(options) is options
    assert not plain_sampling(engine.model.generation_config, {**options, "top_k": 50})



def test_compile_decode_auto_compiles_only_jobs_that_repay_it(engine, monkeypatch, tmp_path):
    """On a GPU, auto compiles the decode step only when the generate stage's job is large enough; the
    compile artifacts go to a cache folder that outlives /tmp."""
    from bonito_adapt.engines.transformers_engine import engine as engine_module

    monkeypatch.setattr(engine, "_compile_by_job_size", True)  # as a CUDA machine decides at construction
    engine.expect_job(engine_module.COMPILE_MIN_TOKENS - 1)
    assert engine.compile_decode is False
    engine.expect_job(engine_module.COMPILE_MIN_TOKENS)
    assert engine.compile_decode is True
    monkeypatch.setattr(engine, "_compile_by_job_size", False)  # compile_decode set in the recipe: left as is
    engine.compile_decode = False
    engine.expect_job(10**9)
    assert engine.compile_decode is False

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    engine_module.use_persistent_compile_cache()
    assert engine_module.os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "bonito_adapt" / "torchinductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    engine_module.use_persistent_compile_cache()
    assert engine_module.os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"
