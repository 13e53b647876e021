# Issue 18 on the device: ranked scoring of the requests' token trie (the evaluate stage's default) vs lm-eval's hf
# path and the paper's per-choice batches (Mistral-7B shape with SmolLM2's tokenizer, EOS-terminated choices), then
# the trie path again under other token budgets on the same model. Needs site.sh sourced, /tmp/m7t
# (scripts/random_model_with_tokenizer.py) and the benchmark files in $DATA. ContractNLI: 10 NDAs x 17 hypotheses.
DATA=${DATA:-$PWD/.dev/data}
BUDGETS=${BUDGETS:-1024:16384,4096:16384,2048:32768,4096:32768}
for task in contract_nli:contract_nli_test:${LIMIT_CONTRACT:-170} pubmed_qa:pubmed_qa:${LIMIT_PUBMED:-200}; do
  IFS=: read -r name file limit <<< "$task"
  echo "== $(date +%T) $name, $limit documents x 5 templates"
  timeout ${EVAL_S:-480} python3 scripts/bench_eval.py --model /tmp/m7t --task $name --data-file $DATA/$file.jsonl.gz \
    --limit $limit --warmup 4 --shared-budgets $BUDGETS --out $OUT/eval_${DEVICE_TAG:-h200}_trie_$name.json 2>&1 | grep -v "it/s\]" | tail -12
done
