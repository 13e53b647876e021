# Issue 18 on the device: ranked scoring from one pass over the shared context vs lm-eval's hf path and the paper's
# per-choice forward (Mistral-7B shape with SmolLM2's tokenizer, EOS-terminated choices). Needs site.sh sourced,
# /tmp/m7t (scripts/random_model_with_tokenizer.py) and the benchmark files in $DATA.
DATA=${DATA:-$PWD/.dev/data}
for task in contract_nli:contract_nli_test pubmed_qa:pubmed_qa; do
  timeout ${EVAL_S:-240} python3 scripts/bench_eval.py --model /tmp/m7t --task ${task%%:*} \
    --data-file $DATA/${task##*:}.jsonl.gz --limit ${LIMIT:-40} --out $OUT/eval_h200_${task%%:*}.json 2>&1 | tail -6
done
