# Source me: the carried wheels installed once per (warm) machine, then the import path.
VDEPS=${VDEPS:-.whl-vllm/deps}
if [ -d $VDEPS ] && [ -f /tmp/vw/part05 ] && [ ! -d /tmp/vsite/vllm ]; then
  (cd /tmp/vw && cat part00 part01 part02 part03 part04 part05 > /tmp/vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl)
  [ "$(md5sum /tmp/vllm-0.26.0-*.whl | cut -c1-32)" = "$(cat $VDEPS/vllm.md5)" ] || { echo "vllm wheel md5 differs"; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/vsite /tmp/vllm-0.26.0-*.whl $VDEPS/*.whl
fi
if [ -d .whl ] && [ ! -f /tmp/site/.whl.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.whl.done
fi
if [ -d .whl-bnb ] && [ ! -d /tmp/site/bitsandbytes ]; then  # 42 MB: its own call
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl-bnb/*.whl
fi
export PYTHONPATH=/tmp/site:/tmp/vsite:$PWD:$PWD/tests VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
