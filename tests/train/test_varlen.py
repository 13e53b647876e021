"""The `varlen` attention adapter: wiring and layout, checked on CPU against SDPA.

PyTorch's varlen kernel itself needs CUDA; here it is replaced by a reference that runs causal
SDPA on each example separately, so what is tested is our adapter: that transformers hands it
TRL's example boundaries, that the (batch, heads, seq, dim) <-> (tokens, heads, dim) layouts and
GQA are right, and that calls without boundaries fall back to SDPA. The kernel is checked on the
GPU by scripts/bench_train.py (first-step loss equal to the reference trainer's).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bonito_adapt.train import trainer
from bonito_adapt.train import varlen as varlen_attention
from bonito_adapt.train.config import TrainConfig
from bonito_adapt.train.trainer import resolve_setup


def _reference_kernel(calls: list[dict], new_api: bool):
    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=None, is_causal=None,
               enable_gqa=False):
        calls.append({"window_size": window_size, "is_causal": is_causal, "enable_gqa": enable_gqa,
                      "cu": cu_q.tolist(), "heads": (q.shape[1], k.shape[1]), "max": (max_q, max_k)})
        assert cu_q.dtype == torch.int32 and torch.equal(cu_q, cu_k)
        outs = []
        for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
            o = F.scaled_dot_product_attention(q[start:end].transpose(0, 1), k[start:end].transpose(0, 1),
                                               v[start:end].transpose(0, 1), is_causal=True, scale=scale,
                                               enable_gqa=enable_gqa)
            outs.append(o.transpose(0, 1))
        return torch.cat(outs)

    params = {"scale", "window_size", "enable_gqa"} if new_api else {"scale", "is_causal"}
    return lambda: (kernel, params)


def _padding_free_batch(tokenizer, texts):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    examples = [{"input_ids": tokenizer(t)["input_ids"]} for t in texts]
    return DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(examples)


def _loss_and_grad(model, batch):
    # As in training: no KV cache (with one, transformers does not look for packed sequences).
    model.config.use_cache = False
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), model.model.embed_tokens.weight.grad.clone()


@pytest.mark.parametrize("new_api", [True, False], ids=["torch>=2.12", "torch2.10-2.11"])
def test_varlen_padding_free_equals_sdpa_per_example(tiny_model_dir, tiny_tokenizer, monkeypatch, new_api):
    from transformers import AutoModelForCausalLM

    calls: list[dict] = []
    monkeypatch.setattr(varlen_attention, "_kernel", _reference_kernel(calls, new_api))
    varlen_attention.register_varlen_attention()
    texts = ["the party shall not disclose confidential information",
             "notice in writing", "this agreement is governed by the laws of the state"]
    batch = _padding_free_batch(tiny_tokenizer, texts)
    assert batch["input_ids"].shape[0] == 1 and "cu_seq_lens_q" in batch

    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    varlen = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="varlen", dtype=torch.float32)
    expected_loss, expected_grad = _loss_and_grad(sdpa, batch)  # SDPA: block-diagonal mask from position_ids
    loss, grad = _loss_and_grad(varlen, batch)

    assert torch.allclose(loss, expected_loss, atol=1e-5)
    assert torch.allclose(grad, expected_grad, atol=1e-5)
    layers = varlen.config.num_hidden_layers
    assert len(calls) == layers  # every layer went through the kernel
    lengths = [len(tiny_tokenizer(t)["input_ids"]) for t in texts]
    assert calls[0]["cu"] == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    assert calls[0]["max"] == (max(lengths), max(lengths))
    heads, kv_heads = varlen.config.num_attention_heads, varlen.config.num_key_value_heads
    if new_api:
        assert calls[0]["window_size"] == (-1, 0) and calls[0]["enable_gqa"] is True
        assert calls[0]["heads"] == (heads, kv_heads)
    else:  # no GQA flag: key/value heads repeated by the adapter
        assert calls[0]["is_causal"] is True and calls[0]["heads"] == (heads, heads)


def test_varlen_without_boundaries_falls_back_to_sdpa(tiny_model_dir, tiny_tokenizer, monkeypatch):
    from transformers import AutoModelForCausalLM

    calls: list[dict] = []
    monkeypatch.setattr(varlen_attention, "_kernel", _reference_kernel(calls, True))
    varlen_attention.register_varlen_attention()
    varlen = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="varlen", dtype=torch.float32)
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    encoded = tiny_tokenizer(["a short one", "a somewhat longer sentence here"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(varlen(**encoded).logits, sdpa(**encoded).logits, atol=1e-6)
    assert calls == []  # a padded batch keeps SDPA and its padding mask


def test_varlen_finds_boundaries_in_position_ids_alone(tiny_model_dir, tiny_tokenizer, monkeypatch):
    from transformers import AutoModelForCausalLM

    calls: list[dict] = []
    monkeypatch.setattr(varlen_attention, "_kernel", _reference_kernel(calls, True))
    varlen_attention.register_varlen_attention()
    batch = _padding_free_batch(tiny_tokenizer, ["the party shall not disclose", "notice in writing"])
    plain = {key: batch[key] for key in ("input_ids", "labels", "position_ids")}  # no cu_seq_lens
    varlen = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="varlen", dtype=torch.float32)
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    assert torch.allclose(_loss_and_grad(varlen, plain)[0], _loss_and_grad(sdpa, plain)[0], atol=1e-5)
    assert calls and calls[0]["cu"] == batch["cu_seq_lens_q"].tolist()


def test_auto_attention_picks_varlen_only_for_padding_free_batches_on_cuda(monkeypatch):

    monkeypatch.setattr(trainer, "varlen_supported", lambda: True)
    monkeypatch.setattr("transformers.utils.is_flash_attn_2_available", lambda: False)
    monkeypatch.setattr(trainer, "say", lambda message: None)
    config = TrainConfig(quantization="none", optimizer="adamw_torch")
    assert resolve_setup(config, cuda=True, world_size=1).attn_implementation == "varlen"
    padded = config.model_copy(update={"padding_free": False})
    assert resolve_setup(padded, cuda=True, world_size=1).attn_implementation == "sdpa"
    assert resolve_setup(config, cuda=False, world_size=1).attn_implementation == "sdpa"


def test_varlen_asked_without_cuda_is_a_one_line_error():
    from bonito_adapt.errors import UserError

    config = TrainConfig(quantization="none", attn_implementation="varlen")
    with pytest.raises(UserError, match="varlen needs a CUDA GPU") as error:
        resolve_setup(config, cuda=False, world_size=1)
    assert "\n" not in str(error.value)
