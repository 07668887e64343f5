#!/usr/bin/env bash
# Build serkit's Python environment in tools/venv (Kaldi/ESPnet convention: every
# recipe's path.sh activates it). Idempotent: a second run only checks.
#
# Why torch 2.11.0: torchaudio on the package registry stops at 2.11.0 and pins the
# same torch version; a newer torch breaks torchaudio's compiled extension, and
# SpeechBrain needs torchaudio. So the pair is installed first and explicitly.
#
# Quiet by design: the terminal shows one line per step, the versions installed and a summary;
# pip's and setuptools' own output (hundreds of deprecation warnings) goes to a log the summary names,
# and a failing step prints that log's last lines. Optional extras: SERKIT_EXTRAS=dev,tensorboard.
set -euo pipefail

TORCH_VERSION=${TORCH_VERSION:-2.11.0}
PYTHON=${PYTHON:-python3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
venv=${SERKIT_VENV:-$here/venv}
extras=${SERKIT_EXTRAS:-dev}
started=$SECONDS

say() { echo "install.sh: $*"; }
if [ ! -x "$venv/bin/python" ]; then
  say "[1/4] creating virtual environment $venv"
  "$PYTHON" -m venv "$venv"
fi
log=$venv/install.log
: > "$log"
quiet() {  # run a step with its output in the log; on failure show where and why
  if ! "$@" >> "$log" 2>&1; then
    say "FAILED: $*"
    tail -n 25 "$log" | sed 's/^/  | /'
    say "full output: $log"
    exit 1
  fi
}
pip="$venv/bin/python -m pip"
quiet $pip install --upgrade pip

if ! "$venv/bin/python" - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys, torch, torchaudio
want = sys.argv[1]
sys.exit(0 if torch.__version__.split("+")[0] == want == torchaudio.__version__.split("+")[0] else 1)
PY
then
  say "[2/4] installing torch==$TORCH_VERSION torchaudio==$TORCH_VERSION"
  quiet $pip install "torch==$TORCH_VERSION" "torchaudio==$TORCH_VERSION"
else
  say "[2/4] torch==$TORCH_VERSION and torchaudio==$TORCH_VERSION already installed"
fi

say "[3/4] installing serkit (editable, extras: $extras) and its dependencies (versions: tools/constraints.txt)"
quiet $pip install -c "$here/constraints.txt" -e "$root[$extras]"

say "[4/4] checking the environment"
quiet "$venv/bin/python" -m serkit.doctor
"$venv/bin/python" - <<'PY'
from importlib import metadata
names = ["torch", "torchaudio", "speechbrain", "transformers", "numpy", "scikit-learn", "opensmile", "soundfile",
         "tensorboard"]
found = []
for name in names:
    try:
        found.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
print("install.sh: installed: " + ", ".join(found))
PY
tail -n 1 "$log" | sed 's/^/install.sh: /'
warnings=$(grep -ci 'warn' "$log" || true)
say "done in $(( SECONDS - started )) s; pip's output, with $warnings warning line(s), is in $log"
say "activate with: . $venv/bin/activate  (recipes' path.sh do this)"
