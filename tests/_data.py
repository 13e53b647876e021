"""Small data and adapters shared by several test modules (each test makes its own files from these)."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = "the contract party shall not disclose confidential information agreement term notice".split()


# Made-up PubMedQA records in the public PQA-L field layout.
PUBMED_RECORDS = [
    {"pubid": 101, "question": "Does daily walking lower blood pressure in older adults?", "split": "test",
     "context": {"contexts": ["We followed 120 adults aged over 65 who walked 30 minutes a day.",
                              "Systolic pressure fell by 8 mmHg on average compared with controls."],
                 "labels": ["METHODS", "RESULTS"], "meshes": ["Walking"]},
     "long_answer": "Walking lowered blood pressure.", "final_decision": "yes"},
    {"pubid": 102, "question": "Is vitamin D linked to fewer colds in children?", "split": "test",
     "context": {"contexts": ["In a trial of 300 children, vitamin D did not change the number of colds."],
                 "labels": ["RESULTS"], "meshes": []},
     "long_answer": "No effect was seen.", "final_decision": "no"},
    {"pubid": 103, "question": "Do night shifts raise the risk of diabetes in nurses?", "split": "test",
     "context": {"contexts": ["The association was weak and not significant after adjustment."],
                 "labels": ["RESULTS"], "meshes": []},
     "long_answer": "The evidence is inconclusive.", "final_decision": "maybe"},
    {"pubid": 104, "question": "Does early surgery improve recovery after hip fracture?", "split": "test",
     "context": {"contexts": ["Patients operated on within 24 hours recovered walking ability faster."],
                 "labels": ["RESULTS"], "meshes": []},
     "long_answer": "Early surgery helped.", "final_decision": "yes"},
]
LABELS = ["yes", "no", "maybe"]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def make_lora_adapter(model_dir: Path, out: Path, *, identity: bool, std: float = 0.5) -> Path:
    """A PEFT LoRA adapter saved like the train stage saves it (adapter + tokenizer)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # identity=True keeps LoRA's zero-initialised B, so the adapted model computes the base function
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=identity)
    peft_model = get_peft_model(model, config)
    if not identity:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=std)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def make_tasks(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(6 + i % 5))
        rows.append({"input": f"{text}\nquestion: does the party disclose?", "output": ["yes", "no"][i % 2]})
    return rows
