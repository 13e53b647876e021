# Join the carried GGUF parts of SmolLM2-135M-Instruct (/tmp/gg/g00..g07) into /tmp/smollm2 and convert it as
# here (scripts/fetch_quickstart_model.py, which skips the download when the GGUF is there): safetensors +
# tokenizer, the GGUF kept beside them.
set -e
[ -f /tmp/smollm2/config.json ] && exit 0
mkdir -p /tmp/smollm2 && cat /tmp/gg/g0* > /tmp/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[ "$(md5sum /tmp/smollm2/*.gguf | cut -c1-32)" = "$(cat ${SMOL:-.dev/smol}/gguf.md5)" ] || { echo "gguf md5 differs"; exit 3; }
python3 scripts/fetch_quickstart_model.py --out /tmp/smollm2
