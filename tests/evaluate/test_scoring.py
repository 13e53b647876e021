"""The trie scorer (evaluate/scoring.py): its rows, and its log-likelihoods against one forward per request."""

from __future__ import annotations

import pytest

from bonito_adapt.evaluate.scoring import forward_batches, pack_rows, score_packed, subtree_ends

torch = pytest.importorskip("torch")

# (context, continuation) token ids: a long shared prefix (one document, several questions), a context
# that is a prefix of another, the same context with three choices, contexts with nothing in common,
# and multi-token choices.
DOCUMENT = [5, 17, 23, 42, 8, 99, 31, 64, 12, 77, 45, 3, 88, 19, 27]
REQUESTS = [
    (DOCUMENT + [101, 102], [7]), (DOCUMENT + [101, 102], [9, 2]), (DOCUMENT + [101, 102], [11, 4, 2]),
    (DOCUMENT + [103], [7]), (DOCUMENT + [103], [9, 2]),
    (DOCUMENT, [60, 61]),
    (DOCUMENT + [101], [7, 7, 2]),
    ([5, 17, 200, 201], [7]), ([5, 17, 200, 201], [9]),
    ([150, 151, 152, 153, 154, 155], [7, 2]), ([150, 151, 152, 153, 154, 155], [9, 2]),
    ([6], [7]),
]


def requests():
    return [(None, context, continuation) for context, continuation in REQUESTS]


def test_subtree_ends_of_a_depth_first_row():
    # root 0 -> 1 -> {2 -> 3, 4}; then a second tree 5 -> 6
    assert subtree_ends([0, 1, 2, 3, 2, 0, 1]) == [5, 5, 4, 4, 5, 7, 7]


def test_rows_hold_each_shared_token_once():
    (row,) = pack_rows(requests(), max_length=1024, row_tokens=10_000)
    contexts = {tuple(c) for c, _ in REQUESTS}
    trie_nodes = {tuple(c[:i]) for c in contexts for i in range(1, len(c) + 1)}
    assert row.contexts == len(contexts)
    assert row.length == len(trie_nodes) + sum(len(ids) for _, ids in REQUESTS)
    assert sorted(index for index, _, _ in row.choices) == list(range(len(REQUESTS)))
    for index, columns, ids in row.choices:  # each choice is predicted from its context's last token on
        context, continuation = REQUESTS[index]
        assert ids == continuation and len(columns) == len(ids)
        assert row.ids[columns[0]] == context[-1] and row.depths[columns[0]] == len(context) - 1
        assert [row.ids[c] for c in columns[1:]] == ids[:-1]
        assert [row.depths[c] for c in columns[1:]] == list(range(len(context), len(context) + len(ids) - 1))


def test_rows_split_at_the_token_budget_and_batches_at_theirs():
    rows = pack_rows(requests(), max_length=1024, row_tokens=24)
    assert len(rows) > 1 and sorted(i for r in rows for i, _, _ in r.choices) == list(range(len(REQUESTS)))
    assert all(r.length <= 24 or r.contexts == 1 for r in rows)
    assert [r.length for r in rows] == sorted((r.length for r in rows), reverse=True)
    batches = forward_batches(rows, tokens_per_forward=2 * rows[0].length)
    assert [r for b in batches for r in b] == rows and all(len(b) * b[0].length <= 2 * rows[0].length for b in batches)


def test_contexts_are_cut_from_the_left_as_lm_eval_does():
    (row,) = pack_rows([(None, list(range(10, 30)), [7, 8])], max_length=8)
    index, columns, ids = row.choices[0]
    assert row.ids == list(range(23, 30)) + [7, 8] and row.depths == list(range(9))


def one_forward_per_request(model):
    scores = []
    for context, continuation in REQUESTS:
        with torch.no_grad():
            logits = model(torch.tensor([context + continuation])).logits[0, len(context) - 1: -1]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        target = torch.tensor(continuation)
        scores.append((log_probs[torch.arange(len(target)), target].sum().item(),
                       bool((logits.argmax(-1) == target).all())))
    return scores


@pytest.fixture(scope="module")
def tiny_models(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    torch.manual_seed(1)
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                             LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    return {"base": base, "adapted": adapted}


@pytest.mark.parametrize("model_name", ["base", "adapted"])
@pytest.mark.parametrize("row_tokens", [10_000, 24, 1])
def test_trie_rows_score_as_one_forward_per_request(tiny_models, model_name, row_tokens):
    """fp32, within 1e-4, greedy flags equal: one row, rows split mid-document, one context per row."""
    model = tiny_models[model_name]
    expected = one_forward_per_request(model)
    rows = pack_rows(requests(), max_length=1024, row_tokens=row_tokens)
    scored = {}
    for batch in forward_batches(rows, tokens_per_forward=3 * rows[0].length):  # padded batches of unequal rows
        scored.update(score_packed(model, batch, pad_id=0))
    assert sorted(scored) == list(range(len(REQUESTS)))
    for index, (score, greedy) in enumerate(expected):
        assert scored[index][0] == pytest.approx(score, abs=1e-4), REQUESTS[index]
        assert scored[index][1] == greedy


@pytest.mark.parametrize("model_name", ["base", "adapted"])
def test_the_output_layer_runs_on_the_predicting_tokens_only(tiny_models, model_name):
    model = tiny_models[model_name]
    rows = pack_rows(requests(), max_length=1024)
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        score_packed(model, rows, pad_id=0)
    finally:
        handle.remove()
    predicting = {(r, c) for r, row in enumerate(rows) for _, columns, _ in row.choices for c in columns}
    assert seen == [(1, len(predicting), model.config.vocab_size)]


def test_a_model_whose_output_layer_cannot_be_hooked_scores_the_same(tiny_models, monkeypatch):
    model = tiny_models["base"]
    rows = pack_rows(requests(), max_length=1024)
    hooked = score_packed(model, rows, pad_id=0)
    monkeypatch.setattr(type(model), "get_output_embeddings", lambda self: None)
    unhooked = score_packed(model, rows, pad_id=0)
    assert {i: flag for i, (_, flag) in unhooked.items()} == {i: flag for i, (_, flag) in hooked.items()}
    assert {i: s for i, (s, _) in unhooked.items()} == pytest.approx({i: s for i, (s, _) in hooked.items()}, abs=1e-5)
