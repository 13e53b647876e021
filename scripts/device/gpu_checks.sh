# Issue 16 on the device: the vLLM engine and evaluate-on-vLLM tests (pytest -m gpu) with the real SmolLM2, then
# the transformers engine's compile warm-up cold and warm (the persistent inductor cache). Needs site.sh sourced,
# /tmp/smollm2 (smollm2.sh) and the benchmark files in $DATA. Writes $OUT/gpu_tests.txt, $OUT/compile_*.json.
export BONITO_ADAPT_GPU_SMALL_MODEL=/tmp/smollm2 BONITO_ADAPT_GPU_GGUF=SmolLM2-135M-Instruct.Q4_1.gguf \
  BONITO_ADAPT_GPU_DATA=${DATA:-$PWD/.dev/data} BONITO_ADAPT_GPU_OUT=$OUT
# pytest-timeout (on the machine) stops a hung test and still prints the summary; the outer timeout alone killed
# pytest before it printed why a test had failed (2026-12-04).
timeout ${TEST_S:-330} python3 -m pytest -p no:cacheprovider -m gpu -q -rA --timeout ${TEST_TIMEOUT:-120} \
  tests/engines/test_vllm_gpu.py \
  tests/evaluate/test_evaluate_gpu.py > $OUT/gpu_tests.txt 2>&1
grep -E "PASSED|FAILED|SKIPPED|ERROR|passed|failed" $OUT/gpu_tests.txt | tail -20
for run in cold warm; do
  timeout 150 python3 scripts/bench_generate.py --model /tmp/smollm2 --prompts 64 --variants compiled-b64 \
    --skip-reference --out $OUT/compile_$run.json 2>&1 | tail -2
done
