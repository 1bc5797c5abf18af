#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with the CPU build of PyTorch first
# (any other route pulls a several-GB CUDA build), then carrierflow and its test tools.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "carrierflow is set up: .venv/bin/carrierflow --help"
