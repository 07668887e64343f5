#!/usr/bin/env bash
# Build serkit's Python environment in tools/venv (Kaldi/ESPnet convention: every
# recipe's path.sh activates it). Idempotent: a second run only checks.
#
# Why torch 2.11.0: torchaudio on the package registry stops at 2.11.0 and pins the
# same torch version; a newer torch breaks torchaudio's compiled extension, and
# SpeechBrain needs torchaudio. So the pair is installed first and explicitly.
set -euo pipefail

TORCH_VERSION=${TORCH_VERSION:-2.11.0}
PYTHON=${PYTHON:-python3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
venv=${SERKIT_VENV:-$here/venv}

if [ ! -x "$venv/bin/python" ]; then
  echo "install.sh: creating virtual environment $venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
pip="$venv/bin/python -m pip"

if ! "$venv/bin/python" - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys, torch, torchaudio
want = sys.argv[1]
sys.exit(0 if torch.__version__.split("+")[0] == want == torchaudio.__version__.split("+")[0] else 1)
PY
then
  echo "install.sh: installing torch==$TORCH_VERSION torchaudio==$TORCH_VERSION"
  $pip install --quiet "torch==$TORCH_VERSION" "torchaudio==$TORCH_VERSION"
fi

echo "install.sh: installing serkit (editable) and its dependencies (versions: tools/constraints.txt)"
$pip install --quiet -c "$here/constraints.txt" -e "$root[dev]"

"$venv/bin/python" -m serkit.doctor
echo "install.sh: done. Activate with: . $venv/bin/activate  (recipes' path.sh do this)"
