#!/usr/bin/env bash
# Installs, once per machine, everything the project needs outside Cargo:
#   - libtorch for tch 0.26: PyPI's torch 2.13.0 wheel in a Python virtual
#     environment, whose `torch/` folder is the libtorch the trainer links,
#   - Debian's Fashion-MNIST package (the trainer's default dataset).
# It links this clone's .libtorch to that torch/ folder (.cargo/config.toml
# hands the link to Cargo as LIBTORCH, so `cargo build` needs no environment
# variables), and prints shell `export` lines for the environment it set up,
# so callers can `eval "$(scripts/setup.sh)"`. Everything else goes to
# standard error.
#
# usage: scripts/setup.sh [--full]      (or SOUP_TORCH=full scripts/setup.sh)
#
# PyPI serves only the CUDA build of torch 2.13.0 on Linux. Two installs:
#   - default, CPU (about 1.2 GB): the torch wheel without its dependencies,
#     plus the two NVIDIA libraries libtorch_cpu itself loads (the CUDA runtime
#     and CUPTI). The trainer then links only libtorch's CPU half and runs on
#     the CPU. Python cannot `import torch` from this install.
#   - --full (about 5 GB): the wheel with all its NVIDIA dependencies, and
#     torchvision. Needed for GPUs (the trainer links libtorch's CUDA half when
#     cuDNN is present; see trainer/build.rs) and for the Python references the
#     tests and benchmarks compare against; scripts/test.sh asks for it.
# Both share one environment, so the libtorch path compiled into binaries
# stays the same: --full upgrades a CPU install in place, and a CPU request
# finds a full install good enough. SOUP_PYTHON, the interpreter with torch,
# numpy and safetensors, is exported only when the install is full.
#
# The cache lives in ${SOUP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sparse-model-soups}
# and is shared by every clone on the machine.
set -euo pipefail

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
# What libtorch_cpu.so needs besides itself (readelf -d: libcudart.so.13,
# libcupti.so.13), at the versions torch 2.13.0 pins.
CPU_EXTRAS=(nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85)
mode=${SOUP_TORCH:-cpu}
for arg in "$@"; do
    case $arg in
        --full) mode=full ;;
        *) printf 'setup: unknown argument %s (usage: scripts/setup.sh [--full])\n' "$arg" >&2; exit 2 ;;
    esac
done
case $mode in
    cpu | full) ;;
    *) printf 'setup: SOUP_TORCH must be cpu or full, not %s\n' "$mode" >&2; exit 2 ;;
esac
cache="${SOUP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sparse-model-soups}"
# The "-cpu" suffix is historical (the first install was CPU-only); the name
# is kept so that existing caches, and the run paths built into trainer
# binaries, stay valid.
venv="$cache/venv-torch-$TORCH_VERSION-cpu"
log() { printf 'setup: %s\n' "$*" >&2; }

mkdir -p "$cache"
# One installer at a time per machine (CI and a developer may share the cache).
exec 9>"$cache/.lock"
flock 9

if [ ! -f "$venv/.complete" ]; then
    log "creating Python environment in $venv (first use only)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2 || true
    "$venv/bin/python" -m pip install --quiet numpy safetensors packaging >&2
    touch "$venv/.complete"
fi

if [ "$mode" = cpu ] && [ ! -f "$venv/.torch-full" ] && [ ! -f "$venv/.torch-cpu" ]; then
    log "installing torch $TORCH_VERSION for the CPU (first use only; about 1.2 GB; SOUP_TORCH=full for GPUs)"
    "$venv/bin/python" -m pip install --quiet --no-deps "torch==$TORCH_VERSION" "${CPU_EXTRAS[@]}" >&2
    touch "$venv/.torch-cpu"
fi
# The full wheels with their dependencies; this also completes a CPU install.
if [ "$mode" = full ] && [ ! -f "$venv/.torch-full" ]; then
    log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION with CUDA libraries (first use only; about 5 GB)"
    "$venv/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" >&2
    "$venv/bin/python" -c 'import torch, torchvision' >&2
    touch "$venv/.torch-full"
fi

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        log "installing Debian package dataset-fashion-mnist"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >&2 \
            || log "could not install dataset-fashion-mnist"
    else
        log "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'"
    fi
fi

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# This clone's link to libtorch, which .cargo/config.toml hands to Cargo as
# LIBTORCH; the export below names the same path, so builds with and without
# it agree and nothing is rebuilt when switching between them.
repo=$(cd "$(dirname "$0")/.." && pwd)
ln -sfn "$site/torch" "$repo/.libtorch"
printf 'export LIBTORCH=%q\n' "$repo/.libtorch"
if [ -f "$venv/.torch-full" ]; then
    printf 'export SOUP_PYTHON=%q\n' "$venv/bin/python"
fi
