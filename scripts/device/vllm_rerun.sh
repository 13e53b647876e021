# Issue 16 on the device: the generate stage vs raw vLLM at 256 and 1,024 prompts with the prefix cache off (the
# first run had it on, which let the stage reuse raw vLLM's prefill). Needs site.sh sourced with vLLM installed
# and /tmp/llama8b (../shared/bench/random_model.py llama-3.1-8b).
timeout ${GEN_S:-300} python3 scripts/bench_generate.py --model /tmp/llama8b --vllm ${CASES:-256x1,1024x1} \
  --out $OUT/generate_vllm_h200_rerun.json 2>&1 | tail -8
