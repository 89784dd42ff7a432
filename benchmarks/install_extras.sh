#!/usr/bin/env bash
# Install the optional benchmark dependencies into the active Python environment without touching torch.
# Usage (repository root): bash benchmarks/install_extras.sh   [PIP="python -m pip" to choose the interpreter]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIP="${PIP:-python -m pip}"
$PIP install -c "$here/constraints.txt" -r "$here/requirements.txt"
$PIP install -c "$here/constraints.txt" --no-deps "deepinv==0.5.0"
