# Issue 18 on the device: the train stage's memory plan vs the paper's Q-LoRA recipe (bench_train.py, Mistral-7B
# shape, same run), with a step profiled. Needs site.sh sourced with .whl-bnb carried, /tmp/mistral7b, /tmp/bench.
timeout ${TRAIN_S:-540} python3 scripts/bench_train.py --model /tmp/mistral7b --yardsticks /tmp/bench --steps 8 \
  --variants defaults,max-memory-20,checkpoint-all --profile --out $OUT/train_h200_memory_plan.json 2>&1 | tail -12
