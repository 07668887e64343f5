# Where the corpus lives. Edit the default, or override per run: RAVDESS=/data/ravdess ./run.sh
RAVDESS=${RAVDESS:-/path/to/ravdess}
