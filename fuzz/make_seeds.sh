#!/usr/bin/env bash
# Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/) from
# the committed test fixtures (fixtures/data) plus two hand-made minimal
# files. Run from anywhere; it replaces the seeds it writes and leaves other
# corpus files alone. Multi-file inputs are joined with the separator of
# fuzz/src/harness.rs (PART_SEPARATOR).
set -euo pipefail
cd "$(dirname "$0")/.."
data=fixtures/data
corpus=fuzz/corpus
sep=$'\n<<soup-fuzz-part>>\n'
mkdir -p "$corpus/header" "$corpus/open" "$corpus/merge"

# join OUT FILE...: the files joined with the separator.
join() {
    local out=$1 first=1
    shift
    : >"$out"
    for f in "$@"; do
        [ "$first" = 1 ] || printf '%s' "$sep" >>"$out"
        first=0
        cat "$f" >>"$out"
    done
}

# A minimal file: one F32 tensor of two elements (8 bytes), with metadata,
# and a file with an empty header.
minimal=$(mktemp)
empty=$(mktemp)
sharded=$(mktemp -d)
trap 'rm -rf "$minimal" "$empty" "$sharded"' EXIT
json='{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
{ printf "\\x$(printf %02x ${#json})\\0\\0\\0\\0\\0\\0\\0"; printf '%s' "$json"; printf '\0\0\x80\x3f\0\0\0\0'; } >"$minimal"
{ printf '\x02\0\0\0\0\0\0\0{}'; } >"$empty"

for f in "$data"/*.safetensors "$data"/candidate-1-sharded/*.safetensors; do
    cp "$f" "$corpus/header/$(basename "$f")"
done
cp "$minimal" "$corpus/header/minimal.safetensors"
cp "$empty" "$corpus/header/empty.safetensors"

for f in parent candidate-0-f16; do
    cp "$data/$f.safetensors" "$corpus/open/$f.safetensors"
done
cp "$minimal" "$corpus/open/minimal.safetensors"
# The sharded fixture, its shards renamed to the harness's shard-K names.
shards=("$data"/candidate-1-sharded/model-*.safetensors)
index="$sharded/index.json"
cp "$data/candidate-1-sharded/model.safetensors.index.json" "$index"
for k in "${!shards[@]}"; do
    sed -i "s/$(basename "${shards[$k]}")/shard-$((k + 1)).safetensors/" "$index"
done
join "$corpus/open/sharded-3" "$index" "${shards[@]}"

join "$corpus/merge/same-mask" "$data/candidate-0.safetensors" "$data/candidate-1.safetensors"
join "$corpus/merge/other-mask" "$data/candidate-0.safetensors" "$data/other-mask.safetensors"
join "$corpus/merge/f16-with-itself" "$data/candidate-0-f16.safetensors"
join "$corpus/merge/f16-with-f32" "$data/candidate-0-f16.safetensors" "$data/candidate-0.safetensors"
join "$corpus/merge/minimal-pair" "$minimal" "$minimal"
