# Where the corpus lives. Edit the default, or override per run: EMODB=/data/emodb ./run.sh
EMODB=${EMODB:-/path/to/emodb}
