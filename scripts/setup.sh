#!/usr/bin/env bash
# Installs, once per machine, everything the project needs outside Cargo:
#   - a Python virtual environment with numpy, safetensors and PyTorch 2.13.0
#     (whose `torch/` folder is the libtorch that tch 0.26 links against),
#   - Debian's Fashion-MNIST package (the trainer's default dataset).
# It prints shell `export` lines for the environment it set up, so callers can
# `eval "$(scripts/setup.sh)"`. Everything else goes to standard error.
#
# The cache lives in ${SOUP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sparse-model-soups}
# and is shared by every clone on the machine.
#
# PyPI serves only the CUDA build of torch 2.13.0 on Linux. Its full install
# (about 5 GB with the NVIDIA libraries) is what both users of it need: tch
# links libtorch_cpu and libtorch_cuda (the trainer then runs on the CPU when
# there is no GPU, and on the GPU when there is one), and Python's
# `import torch` needs cuDNN, cuBLAS and NCCL to be present even on a CPU.
set -euo pipefail

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
cache="${SOUP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sparse-model-soups}"
# The "-cpu" suffix is historical (an earlier slim install); the name is kept
# so that existing caches, and the run paths built into trainer binaries,
# stay valid.
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

# The full torch and torchvision wheels with their dependencies. This also
# upgrades an environment left by the earlier slim install.
if [ ! -f "$venv/.torch-full" ]; then
    log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION (first use only; a few GB)"
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
printf 'export LIBTORCH=%q\n' "$site/torch"
printf 'export SOUP_PYTHON=%q\n' "$venv/bin/python"
