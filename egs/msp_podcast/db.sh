# Where the corpus lives. Edit the default, or override per run: MSP_PODCAST=/data/msp_podcast ./run.sh
MSP_PODCAST=${MSP_PODCAST:-/path/to/msp_podcast}
