"""The `prompted` generator style: ask any chat/instruct model for a task, through its chat template.

This is the Bonito paper's instruction-model baseline: instead of a model trained to turn
`<|tasktype|>...<|context|>...<|task|>` into a task, an off-the-shelf instruct model gets a short
instruction per task type and writes the task in Bonito's `input<|pipe|>output` form, so the same
parser (`prompts.parse_bonito_output`) reads both styles.

Small models rarely reproduce the passage inside the task input, so the instruction asks only for
the question part; `prompted_task` puts the passage in front of it (unless the model wrote the
`{{context}}` placeholder itself), which gives tasks of the same shape as Bonito's.
"""

from __future__ import annotations

from .task_format import PIPE, parse_bonito_output, short_task_type

__all__ = ["INSTRUCTIONS", "EXAMPLES", "EXAMPLE_PASSAGES", "prompted_messages", "prompted_prompt", "prompted_task"]

# One short instruction per task type; each names the two parts written around the pipe.
INSTRUCTIONS: dict[str, str] = {
    "exqa": "Ask a question about this passage whose answer is a few words copied from it, and give the answer",
    "mcqa": "Ask a multiple-choice question about this passage with options A, B, C and D, and give the "
            "correct option",
    "qg": "Take a short answer from this passage and write the question about the passage that it answers",
    "qa": "Ask a question about this passage and give its answer in one sentence",
    "ynqa": "Ask a yes/no question about this passage and give its answer",
    "coref": "Ask what a pronoun or phrase in this passage refers to, and give the answer",
    "paraphrase": "Copy a sentence of this passage and write it again in other words",
    "paraphrase_id": "Ask whether two sentences about this passage mean the same thing, and give the answer (Yes or No)",
    "sent_comp": "Write the beginning of a sentence of this passage and how the sentence ends",
    "sentiment": "Ask what the sentiment of this passage is, and give the answer (positive, negative or neutral)",
    "summarization": "Ask for a summary of this passage and give a one-sentence summary",
    "text_gen": "Write an instruction to write a short text on this passage's topic, and write that text",
    "topic_class": "Ask what the topic of this passage is, and give the topic in a few words",
    "wsd": "Ask what a word of this passage means there, and give its meaning",
    "te": "Write a statement and ask whether this passage supports it, and give the answer (Yes or No)",
    "nli": "Write a statement and ask whether this passage implies it, contradicts it or neither, and give the "
           "answer (entailment, contradiction or neutral)",
}

# Two short passages unrelated to any input, and a worked answer for each task type on each.
EXAMPLE_PASSAGES = (
    "Jupiter is the largest planet in the solar system. It is a gas giant and has many moons.",
    "Visitors must sign in at the front desk. Badges are returned when leaving the building.",
)
EXAMPLES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "exqa": (("Which planet is the largest?", "Jupiter"), ("Where must visitors sign in?", "at the front desk")),
    "mcqa": (("Which planet is the largest? A. Mars B. Jupiter C. Venus D. Earth", "B. Jupiter"),
             ("Where do visitors sign in? A. online B. at the gate C. at the front desk D. nowhere",
              "C. at the front desk")),
    "qg": (("Jupiter", "Which planet is the largest?"), ("at the front desk", "Where must visitors sign in?")),
    "qa": (("Why is Jupiter called a gas giant?", "Because it is a huge planet made mostly of gas."),
           ("What happens to badges when visitors leave?", "They are returned.")),
    "ynqa": (("Is Jupiter the largest planet?", "Yes"), ("Can visitors keep their badges?", "No")),
    "coref": (('What does "It" refer to in "It is a gas giant"?', "Jupiter"),
              ('Who must sign in at the front desk?', "visitors")),
    "paraphrase": (("Jupiter is the largest planet in the solar system.", "No planet in the solar system is bigger "
                    "than Jupiter."), ("Visitors must sign in at the front desk.", "Guests have to register at "
                                                                                   "reception.")),
    "paraphrase_id": (('Do "Jupiter is the largest planet" and "No planet is bigger than Jupiter" mean the same?',
                       "Yes"), ('Do "Visitors sign in" and "Visitors keep badges" mean the same?', "No")),
    "sent_comp": (("Jupiter is the largest", "planet in the solar system."),
                  ("Badges are returned when", "leaving the building.")),
    "sentiment": (("What is the sentiment of the passage?", "neutral"),
                  ("What is the sentiment of the passage?", "neutral")),
    "summarization": (("Summarize the passage.", "Jupiter is the largest planet, a gas giant with many moons."),
                      ("Summarize the passage.", "Visitors sign in at the front desk and return their badges.")),
    "text_gen": (("Write a short note about Jupiter.", "Jupiter is a giant planet made of gas, with many moons."),
                 ("Write a sign for visitors.", "Welcome! Please sign in at the front desk.")),
    "topic_class": (("What is the topic of the passage?", "astronomy"),
                    ("What is the topic of the passage?", "building security")),
    "wsd": (('What does "giant" mean in the passage?', "a very large planet"),
            ('What does "badges" mean in the passage?', "visitor passes")),
    "te": (('Does the passage support "Jupiter is small"?', "No"),
           ('Does the passage support "Visitors must sign in"?', "Yes")),
    "nli": (('Does the passage imply, contradict, or neither: "Jupiter is small"?', "contradiction"),
            ('Does the passage imply, contradict, or neither: "Visitors sign in at the desk"?', "entailment")),
}


def _instruction(short: str) -> str:
    return f"{INSTRUCTIONS[short]}, in the format: question {PIPE} answer"


def prompted_messages(passage: str, task_type: str) -> list[dict[str, str]]:
    """The chat messages asking for one task of `task_type` about `passage`.

    The worked examples come as earlier chat turns (passage first, instruction last): small
    models copy a format far more reliably from previous answers than from a description of it.
    """
    short = short_task_type(task_type)
    messages = []
    for example_passage, (task_input, task_output) in zip(EXAMPLE_PASSAGES, EXAMPLES[short], strict=True):
        messages.append({"role": "user", "content": f"{example_passage}\n\n{_instruction(short)}"})
        messages.append({"role": "assistant", "content": f"{task_input} {PIPE} {task_output}"})
    messages.append({"role": "user", "content": f"{passage.strip()}\n\n{_instruction(short)}"})
    return messages


def prompted_prompt(tokenizer, passage: str, task_type: str) -> str:
    """The full prompt text: the messages through the tokenizer's chat template, ready for the assistant."""
    return tokenizer.apply_chat_template(prompted_messages(passage, task_type), tokenize=False,
                                         add_generation_prompt=True)


def prompted_task(text: str, passage: str) -> tuple[str, str] | None:
    """Parse a prompted generation exactly like Bonito's, then put the passage in front of the task input."""
    parsed = parse_bonito_output(text, passage)
    if parsed is None:
        return None
    task_input, task_output = parsed
    if not task_input or not task_output:
        return None
    if passage.strip() not in task_input:
        task_input = f"{passage.strip()}\n\n{task_input}"
    return task_input, task_output
