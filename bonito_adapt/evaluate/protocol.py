"""How a model is prompted and scored: the Bonito paper's protocol, or lm-eval's own.

**paper** (evaluation/evaluate_decoder.py and merge_and_evaluate_squad.py of the paper's code; the
full account with sources is docs/paper_protocol.md):

- The rendered template input `x` (stripped) is wrapped per model: `instruct` =
  `Instruct: {x}\\nAnswer:` for a base model without adapter, `bonito` = `<|input|>\\n{x}\\n<|output|>\\n`
  for a model trained by the train stage, `mistral_instruct` = `[INST] {x} [/INST]` for
  Mistral-7B-Instruct-v0.2 (with or without adapter).
- Ranked choice: the source is the BOS token's text followed by the wrapped input; each choice is the
  stripped choice followed by the EOS token's text (none for Mistral-Instruct). Source and choice are
  tokenized separately, without added special tokens (the BOS and EOS come from the text), the source
  cut to its first 1,024 tokens and the choice to 1,024; the score is the summed log-probability of
  the choice's tokens, EOS included, and the prediction the argmax (ties: the first choice).
- Generation (SQuADShifts): the wrapped input without BOS text (the tokenizer adds its BOS, as vLLM
  does for the paper); greedy, 25 new tokens, no stop string (the task YAML's settings).

**lm_eval**: lm-eval's own request building (the choice after `target_delimiter`, context and
continuation encoded together, no EOS) with the wrappers `plain` (the text as is), `bonito` (the
training prompt, no BOS text) and `chat` (the tokenizer's chat template).

`protocol: auto` uses the paper's for the paper's benchmarks (`bonito_adapt.benchmarks`) and
lm-eval's for every other task. `prompt_format: auto` picks the wrapper as the paper's code does for
the paper protocol, and `plain` (base) / `bonito` (adapted) for lm-eval's.
"""

from __future__ import annotations

from pathlib import Path

from ..benchmarks import benchmark

__all__ = ["WRAPPERS", "PAPER_SOURCE_MAX_TOKENS", "PAPER_CHOICE_MAX_TOKENS", "MISTRAL_INSTRUCT", "task_protocol",
           "resolve_wrapper", "wrap", "ProtocolMixin"]

WRAPPERS = {
    "plain": "{x}",
    "bonito": "<|input|>\n{x}\n<|output|>\n",  # = train.data.training_prompt
    "instruct": "Instruct: {x}\nAnswer:",
    "mistral_instruct": "[INST] {x} [/INST]",
}
PAPER_SOURCE_MAX_TOKENS = 1024  # the paper's TestArguments.source_max_len
PAPER_CHOICE_MAX_TOKENS = 1024  # target_max_len
MISTRAL_INSTRUCT = "mistralai/Mistral-7B-Instruct-v0.2"


def task_protocol(setting: str, task: str) -> str:
    """`paper` or `lm_eval` for one task under `evaluate.protocol` = `setting`."""
    if setting != "auto":
        return setting
    return "paper" if benchmark(task) is not None else "lm_eval"


def _is_mistral_instruct(model: str) -> bool:
    name = str(model).rstrip("/")
    return name == MISTRAL_INSTRUCT or Path(name).name == Path(MISTRAL_INSTRUCT).name


def resolve_wrapper(setting: str, protocol: str, model: str, adapter: str | None) -> str:
    """The wrapper of one model: `setting` itself, or for `auto` the paper's rule (paper protocol) or
    plain / bonito (lm-eval's protocol)."""
    if setting != "auto":
        return setting
    if protocol == "paper":
        if _is_mistral_instruct(model):
            return "mistral_instruct"
        # The paper's code sets the simple prompt for a base model without adapter (for Mistral-7B-v0.1 and
        # Llama-2-7b by name; any base model here) and the adapter prompt for a trained adapter.
        return "bonito" if adapter else "instruct"
    return "bonito" if adapter else "plain"


def wrap(wrapper: str, text: str, protocol: str) -> str:
    """The wrapped prompt (the paper's code strips the input first)."""
    return WRAPPERS[wrapper].format(x=text.strip() if protocol == "paper" else text)


class ProtocolMixin:
    """Mixed into an lm-eval model class (HFLM, VLLM): the wrapper goes in through lm-eval's chat-template
    hook, and under the paper protocol loglikelihood requests are encoded as the paper's code encodes them.

    `use(protocol, wrapper)` sets both before each task is evaluated. The scored strings replace each
    request's arguments, so lm-eval's logged samples show exactly what the model scored.
    """

    protocol = "lm_eval"
    wrapper = "plain"

    def use(self, protocol: str, wrapper: str) -> None:
        self.protocol, self.wrapper = protocol, wrapper

    @property
    def wraps_prompts(self) -> bool:
        """Whether lm-eval should build prompts through `apply_chat_template` (and drop its target delimiter)."""
        return self.protocol == "paper" or self.wrapper != "plain"

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if self.wrapper == "chat":
            return super().apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)
        # Zero-shot: one user turn (plus a system turn only if a description is set).
        return wrap(self.wrapper, "\n\n".join(message["content"] for message in chat_history), self.protocol)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if self.wrapper == "chat":
            return super().chat_template(chat_template)
        return WRAPPERS[self.wrapper]

    def paper_requests(self, requests) -> list[tuple[tuple[str, str], list[int], list[int]]]:
        """(strings, source ids, choice ids) per request, as the paper's collator builds them."""
        tokenizer = self.tokenizer
        bos = tokenizer.bos_token or ""
        eos = "" if self.wrapper == "mistral_instruct" else (tokenizer.eos_token or "")
        strings = []
        for request in requests:
            context, choice = request.args
            source = context if context.startswith(bos) else bos + context
            request.arguments = (source, choice.strip() + eos)  # what the logged sample shows
            strings.append(request.arguments)
        # Each distinct string once, in one batched call: a source recurs once per choice, a choice per example.
        sources = _encode_distinct(tokenizer, (source for source, _ in strings), PAPER_SOURCE_MAX_TOKENS)
        choices = _encode_distinct(tokenizer, (choice for _, choice in strings), PAPER_CHOICE_MAX_TOKENS)
        return [((source, choice), sources[source], choices[choice]) for source, choice in strings]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        if self.protocol != "paper":
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        return self._loglikelihood_tokens(self.paper_requests(requests), disable_tqdm=disable_tqdm)


def _encode_distinct(tokenizer, texts, max_tokens: int) -> dict[str, list[int]]:
    """Token ids (no added special tokens, cut to the first `max_tokens`) of each distinct text."""
    distinct = list(dict.fromkeys(texts))
    encoded = tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
    return {text: ids[:max_tokens] for text, ids in zip(distinct, encoded, strict=True)}
