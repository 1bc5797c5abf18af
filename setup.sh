#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with PyTorch first, then carrierflow and its
# test tools. PyPI's Linux torch wheel is the several-GB CUDA build: for the CPU one, run it as
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash setup.sh (these machines' pip
# configuration already finds it in /opt/wheels).
# `bash setup.sh --gpaw` also installs GPAW and its PAW setups from Debian's packages
# (gpaw, gpaw-data; needs root or sudo); carrierflow runs them with the system python.
set -euo pipefail
cd "$(dirname "$0")"
if [[ "${1:-}" == "--gpaw" ]]; then
    SUDO=$([[ $(id -u) == 0 ]] && echo "" || echo "sudo")
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gpaw gpaw-data >/dev/null
    /usr/bin/python3 -c "import gpaw; print('GPAW', gpaw.__version__, 'installed for /usr/bin/python3')"
fi
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "carrierflow is set up: .venv/bin/carrierflow --help"
