# Everything of issues 16 and 18 in one background job on one warm machine, so that the wheel parts can travel
# (calls that only copy) while the benchmarks run. Start it from a copy of the repository (/tmp/repo) after
# site.sh; results and the log go to /tmp/res, which later calls copy to $OUT. Steps wait on flag files that the
# carrying calls touch: /tmp/bnb.done (bitsandbytes installed), /tmp/parts.done (vLLM's six parts, its
# dependencies in /tmp/vdeps and the eight GGUF parts are all here). The GPU steps run one at a time, in priority
# order; what needs only the CPU (vLLM's install, SmolLM2's conversion, the Llama-3.1-8B random model) runs beside
# the evaluation benchmark, not beside the training one.
cd /tmp/repo && mkdir -p /tmp/res && export OUT=/tmp/res DATA=/tmp/devdata SMOL=/tmp/smol
step() { echo "== $(date +%T) $1"; }
step "random models"
python3 /tmp/bench/random_model.py mistral-7b /tmp/mistral7b --device cuda 2>&1 | tail -1
python3 scripts/random_model_with_tokenizer.py mistral-7b /tmp/smol /tmp/m7t --device cuda --yardsticks /tmp/bench 2>&1 | tail -1
while [ ! -f /tmp/bnb.done ]; do sleep 2; done
step "train memory plan (issue 18)"; source scripts/device/site.sh; bash scripts/device/memory.sh
(
  python3 /tmp/bench/random_model.py llama-3.1-8b /tmp/llama8b --device cpu 2>&1 | tail -1
  while [ ! -f /tmp/parts.done ]; do sleep 2; done
  bash scripts/device/smollm2.sh 2>&1 | tail -2
  VDEPS=/tmp/vdeps source scripts/device/site.sh; python3 -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tail -1
  touch /tmp/cpu_side.done
) > /tmp/res/cpu_side.log 2>&1 &
step "eval shared context (issue 18)"; bash scripts/device/eval_shared_context.sh
step "SmolLM2 and vLLM install"; while [ ! -f /tmp/cpu_side.done ]; do sleep 2; done; cat /tmp/res/cpu_side.log
VDEPS=/tmp/vdeps source scripts/device/site.sh
step "GPU tests (issue 16)"; TEST_S=${TEST_S:-300} bash scripts/device/gpu_checks.sh
step "vLLM rerun (issue 16)"; bash scripts/device/vllm_rerun.sh
step "done"; touch /tmp/res/pipeline.done
