# Where the corpus lives. Edit the default, or override per run: CREMA_D=/data/crema_d ./run.sh
CREMA_D=${CREMA_D:-/path/to/crema_d}
