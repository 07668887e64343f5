# Where the corpus lives. Edit the default, or override per run: ESD=/data/esd ./run.sh
ESD=${ESD:-/path/to/esd}
