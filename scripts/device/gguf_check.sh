# Issue 16: the GGUF test alone, with its traceback (on 2026-12-04 gpu_checks.sh's pytest reached its timeout
# after the GGUF test had failed, before printing why), then vLLM's LLM on the same file directly: bfloat16 and
# float16, with and without the folder's config. Needs vLLM installed (site.sh) and the GGUF parts in /tmp/gg;
# the model folder is the tokenizer/config copy (.dev/smol) with the joined GGUF in it.
mkdir -p /tmp/smolg && cp .dev/smol/* /tmp/smolg/ && cat /tmp/gg/g0* > /tmp/smolg/SmolLM2-135M-Instruct.Q4_1.gguf
export BONITO_ADAPT_GPU_SMALL_MODEL=/tmp/smolg BONITO_ADAPT_GPU_GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
timeout 100 python3 -m pytest -p no:cacheprovider -m gpu -x -q -s --tb=short tests/engines/test_vllm_gpu.py \
  -k gguf > $OUT/gguf_pytest.txt 2>&1
grep -v "INFO\|WARNING" $OUT/gguf_pytest.txt | tail -40
for case in bfloat16:folder float16:folder bfloat16:none; do
  timeout 70 python3 - ${case%%:*} ${case##*:} > $OUT/gguf_direct_${case/:/_}.txt 2>&1 <<'PY'
import sys
from vllm import LLM, SamplingParams
dtype, config = sys.argv[1], sys.argv[2]
extra = {"hf_config_path": "/tmp/smolg"} if config == "folder" else {}
llm = LLM(model="/tmp/smolg/SmolLM2-135M-Instruct.Q4_1.gguf", tokenizer="/tmp/smolg", dtype=dtype, enforce_eager=True,
          gpu_memory_utilization=0.25, max_model_len=2048, **extra)
out = llm.generate(["The contract says the receiving party shall"], SamplingParams(temperature=0, max_tokens=8))
print("RESULT", dtype, config, repr(out[0].outputs[0].text))
PY
  echo "== $case rc=$?"; grep -E "RESULT|Error|error" $OUT/gguf_direct_${case/:/_}.txt | grep -v "INFO" | tail -4
done
