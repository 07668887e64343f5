# Sourced by every recipe's path.sh: activates the environment tools/install.sh builds.
serkit_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
serkit_venv=${SERKIT_VENV:-$serkit_root/tools/venv}
if [ ! -f "$serkit_venv/bin/activate" ]; then
  echo "path.sh: no serkit environment at $serkit_venv; build it with: $serkit_root/tools/install.sh" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "$serkit_venv/bin/activate"
export LC_ALL=C            # Kaldi convention: byte-order sorting everywhere
export PYTHONUNBUFFERED=1  # logs appear as they are written
export HF_HUB_DISABLE_TELEMETRY=1
