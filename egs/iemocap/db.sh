# Where the corpora live. Edit the default, or override per run: IEMOCAP=/data/IEMOCAP_full_release ./run.sh
IEMOCAP=${IEMOCAP:-/path/to/IEMOCAP_full_release}
