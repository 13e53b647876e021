# The ContractNLI check of docs/contract_nli_check.md on the GPU: NLI tasks generated from the ContractNLI dev
# NDAs with SmolLM2-135M-Instruct on vLLM (prompted style), a LoRA adapter trained on them, base vs adapted
# on the first $LIMIT ContractNLI test hypotheses x 5 templates, under the paper's protocol and under lm-eval's.
# Needs: source scripts/device/site.sh; /tmp/smollm2 (smollm2.sh); .dev/data. Writes $OUT/cnli_*.json.
set -e
LIMIT=${LIMIT:-300}
mkdir -p /tmp/cnli
cat > /tmp/cnli/recipe.yaml <<YAML
name: contract_nli_gpu_check
output_dir: /tmp/cnli/run
seed: 0
generate:
  input: {files: [$PWD/.dev/data/contract_nli_dev.jsonl.gz], context_col: premise, id_col: doc_id}
  task_type: nli
  style: prompted
  model: /tmp/smollm2
  engine: vllm
  vllm: {gpu_memory_utilization: 0.4, max_model_len: 2048}
  chunking: {max_tokens: 256, overlap_tokens: 16}
  sampling: {n: 2, temperature: 0.3, top_p: 0.95, max_tokens: 128, seed: 0}
train:
  model: /tmp/smollm2
  quantization: none
  lora: {r: 16, alpha: 32, dropout: 0.0}
  learning_rate: 2.0e-4
  effective_batch_size: 16
  num_epochs: 2
  max_length: 1024
  logging_steps: 5
evaluate:
  tasks: [contract_nli]
  models: [base, adapted]
  protocol: paper
  data_files: {contract_nli: $PWD/.dev/data/contract_nli_test.jsonl.gz}
  limit: $LIMIT
report: {}
YAML
python3 -m bonito_adapt run /tmp/cnli/recipe.yaml 2>&1 | grep -v "it/s\]\|examples/s\]" | tail -25
python3 -m bonito_adapt run /tmp/cnli/recipe.yaml --stages evaluate output_dir=/tmp/cnli/lm_eval \
  evaluate.protocol=lm_eval evaluate.adapter=/tmp/cnli/run/train/adapter 2>&1 | tail -3
cp /tmp/cnli/run/generate/stats.json $OUT/cnli_generate_stats.json
cp /tmp/cnli/run/train/stats.json $OUT/cnli_train_stats.json
cp /tmp/cnli/run/evaluate/results.json $OUT/cnli_paper_results.json
cp /tmp/cnli/lm_eval/evaluate/results.json $OUT/cnli_lm_eval_results.json
head -c 300000 /tmp/cnli/run/generate/tasks.jsonl > $OUT/cnli_tasks_head.jsonl
