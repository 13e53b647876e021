"""The vllm engine up to `LLM.generate`, on CPU, with the vLLM test double of tests/_fake_vllm.py.

The double copies vLLM 0.33.0's signatures (LLM.__init__, LLM.generate, SamplingParams), so the
keyword names the engine passes are checked against the real API; what it passes is recorded.
"""

from __future__ import annotations

import sys

import _fake_vllm
import pytest

from bonito_adapt.engines import load_engine, resolve_engine_name
from bonito_adapt.engines.spec import EngineSpec, SamplingConfig
from bonito_adapt.engines.vllm_engine import VLLMEngine, llm_kwargs
from bonito_adapt.errors import UserError

BONITO = "BatsResearch/Llama-3.1-8B-bonito-v1"


@pytest.fixture
def fake_vllm(monkeypatch):
    return _fake_vllm.install(monkeypatch)


def _config(**fields) -> EngineSpec:
    return EngineSpec(**{"model": BONITO, **fields})


def test_llm_gets_every_setting_under_vllm_names(fake_vllm):
    config = _config(tokenizer="some/tokenizer", dtype="bfloat16", trust_remote_code=True,
                     seed=5,
                     vllm={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8, "max_model_len": 2048,
                           "quantization": "awq", "enforce_eager": True})
    engine = load_engine("vllm", config)
    assert isinstance(engine, VLLMEngine) and engine.name == "vllm"
    assert fake_vllm.created == [{
        "model": BONITO, "tokenizer": "some/tokenizer", "trust_remote_code": True, "tensor_parallel_size": 2,
        "dtype": "bfloat16", "quantization": "awq", "seed": 5, "gpu_memory_utilization": 0.8,
        "enforce_eager": True, "max_model_len": 2048,
    }]
    assert engine.max_context == 2048


def test_defaults_leave_vllm_to_choose(fake_vllm):
    engine = VLLMEngine(_config())
    assert fake_vllm.created == [{
        "model": BONITO, "tokenizer": None, "trust_remote_code": False, "tensor_parallel_size": 1,
        "dtype": "auto", "quantization": None, "seed": 0, "gpu_memory_utilization": 0.9,
        "enforce_eager": False,
    }]
    assert engine.max_context == 4096  # the model's own length, read from llm_engine.model_config


def test_one_generate_call_n_completions_in_prompt_and_index_order(fake_vllm):
    engine = VLLMEngine(_config())
    prompts = ["first passage", "second", "third one here"]
    sampling = SamplingConfig(n=3, temperature=0.7, top_p=0.9, max_tokens=64, seed=11)
    results = engine.generate(prompts, sampling)
    assert results == [[f"{p}|{i}|seed=11" for i in range(3)] for p in prompts]
    assert len(fake_vllm.generate_calls) == 1 and fake_vllm.generate_calls[0]["prompts"] == prompts
    params = fake_vllm.generate_calls[0]["sampling_params"]
    assert (params.n, params.temperature, params.top_p, params.max_tokens, params.seed) == (3, 0.7, 0.9, 64, 11)
    # Everything else stays at vLLM's defaults.
    assert (params.top_k, params.min_p, params.repetition_penalty, params.stop) == (0, 0.0, 1.0, None)


def test_several_shards_in_one_call_each_with_its_seed(fake_vllm):
    """generate_many: the generate stage's shards in flight together, one LLM.generate call, one
    SamplingParams per prompt carrying its shard's seed, results split back per shard."""
    engine = VLLMEngine(_config())
    assert engine.prompts_per_call == 4096
    requests = [(["a", "b"], SamplingConfig(n=2, seed=3)), (["c"], SamplingConfig(n=2, seed=4))]
    assert engine.generate_many(requests) == [[["a|0|seed=3", "a|1|seed=3"], ["b|0|seed=3", "b|1|seed=3"]],
                                              [["c|0|seed=4", "c|1|seed=4"]]]
    assert len(fake_vllm.generate_calls) == 1 and fake_vllm.generate_calls[0]["prompts"] == ["a", "b", "c"]
    assert [p.seed for p in fake_vllm.generate_calls[0]["sampling_params"]] == [3, 3, 4]


def test_card_defaults_and_empty_input(fake_vllm):
    engine = VLLMEngine(_config())
    assert engine.generate([], SamplingConfig()) == [] and fake_vllm.generate_calls == []
    assert engine.generate(["a"], SamplingConfig()) == [["a|0|seed=0"]]
    params = fake_vllm.sampling_params[-1]
    assert (params.n, params.temperature, params.top_p, params.max_tokens) == (1, 0.5, 0.95, 256)


def test_count_tokens_uses_vllms_tokenizer_without_special_tokens(fake_vllm):
    engine = VLLMEngine(_config())
    assert engine.count_tokens("one two three four") == 4


def test_close_stops_the_engine_and_frees_memory(fake_vllm):
    engine = VLLMEngine(_config())
    engine.close()
    assert engine.llm is None
    assert fake_vllm.shutdowns == ["engine_core"]
    assert fake_vllm.destroyed == ["model_parallel", "distributed_environment"]
    engine.close()  # a second close does nothing
    assert fake_vllm.shutdowns == ["engine_core"]


def test_missing_vllm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(UserError, match=r"vllm is not installed.*pip install 'bonito_adapt\[vllm\]'"):
        VLLMEngine(_config())


def test_gguf_file_in_a_local_folder(fake_vllm, tmp_path):
    (tmp_path / "model.Q4.gguf").write_bytes(b"GGUF")
    VLLMEngine(_config(model=str(tmp_path), gguf_file="model.Q4.gguf"))
    assert fake_vllm.created[0]["model"] == str(tmp_path / "model.Q4.gguf")
    assert fake_vllm.created[0]["tokenizer"] == str(tmp_path)
    assert "hf_config_path" not in fake_vllm.created[0]  # no config.json in the folder
    (tmp_path / "config.json").write_text("{}")
    VLLMEngine(_config(model=str(tmp_path), gguf_file="model.Q4.gguf"))
    assert fake_vllm.created[1]["hf_config_path"] == str(tmp_path)


def test_gguf_file_on_a_vllm_without_gguf_support_is_a_user_error(fake_vllm, monkeypatch, tmp_path):
    """vLLM 0.26.0 has no GGUF loader (it read the file as a JSON config on the device): say so before vLLM does."""
    (tmp_path / "model.Q4.gguf").write_bytes(b"GGUF")
    _fake_vllm.offer_quantization_methods(monkeypatch, ["awq", "fp8", "bitsandbytes"])
    with pytest.raises(UserError, match=r"generate.gguf_file: vLLM .* cannot load GGUF files .*engine: transformers"):
        VLLMEngine(_config(model=str(tmp_path), gguf_file="model.Q4.gguf"))
    assert fake_vllm.created == []
    VLLMEngine(_config(model=str(tmp_path)))  # the same model as a folder is fine
    _fake_vllm.offer_quantization_methods(monkeypatch, ["awq", "gguf"])  # e.g. with the GGUF plugin
    VLLMEngine(_config(model=str(tmp_path), gguf_file="model.Q4.gguf"))
    assert len(fake_vllm.created) == 2


def test_auto_picks_transformers_for_gguf_when_vllm_cannot_load_it(fake_vllm, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_engine_name("auto", _config()) == "vllm"
    assert resolve_engine_name("auto", _config(gguf_file="m.gguf")) == "vllm"  # cannot tell: vLLM tries
    _fake_vllm.offer_quantization_methods(monkeypatch, ["awq"])
    assert resolve_engine_name("auto", _config(gguf_file="m.gguf")) == "transformers"
    assert resolve_engine_name("auto", _config()) == "vllm"
    assert resolve_engine_name("vllm", _config(gguf_file="m.gguf")) == "vllm"  # named: its own clear error


def test_gguf_file_of_a_hub_model_is_a_user_error(fake_vllm):
    with pytest.raises(UserError, match="generate.gguf_file: engine vllm needs the GGUF file on this machine"):
        llm_kwargs(_config(gguf_file="model.Q4.gguf"))


def test_missing_local_model_is_a_user_error(fake_vllm, tmp_path):
    with pytest.raises(UserError, match="generate.model: model path .* does not exist"):
        VLLMEngine(_config(model=str(tmp_path / "nope")))
    assert fake_vllm.created == []


def test_the_double_rejects_names_vllm_does_not_have(fake_vllm):
    # What makes the tests above a check of the real API: a misspelt name fails as in vLLM.
    with pytest.raises(TypeError):
        fake_vllm.LLM(BONITO, tensor_parallel=2)
    with pytest.raises(TypeError):
        fake_vllm.SamplingParams(max_new_tokens=3)


def test_a_special_pipe_token_keeps_special_tokens_in_the_text(fake_vllm, tiny_model_dir, monkeypatch):
    """vLLM drops special tokens from returned text by default: with `<|pipe|>` a special added token the
    engine asks for them to be kept (else nothing would parse); a plain added token changes nothing."""
    from transformers import AutoTokenizer

    from bonito_adapt.engines.vllm_engine import separator_is_special

    special = AutoTokenizer.from_pretrained(tiny_model_dir)
    special.add_special_tokens({"additional_special_tokens": ["<|pipe|>"]})
    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain.add_tokens(["<|pipe|>"])
    assert separator_is_special(special) and not separator_is_special(plain)
    assert not separator_is_special(AutoTokenizer.from_pretrained(tiny_model_dir))

    monkeypatch.setattr(fake_vllm._LLMEngine, "get_tokenizer", lambda self: special)
    engine = VLLMEngine(_config())
    engine.generate(["a"], SamplingConfig())
    assert fake_vllm.sampling_params[-1].skip_special_tokens is False
    monkeypatch.setattr(fake_vllm._LLMEngine, "get_tokenizer", lambda self: plain)
    VLLMEngine(_config()).generate(["a"], SamplingConfig())
    assert fake_vllm.sampling_params[-1].skip_special_tokens is True
