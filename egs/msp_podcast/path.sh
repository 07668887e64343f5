# Activates serkit's environment (built by tools/install.sh).
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/env.sh"
