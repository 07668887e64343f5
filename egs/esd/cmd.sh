# How jobs run (Kaldi convention). serkit-run's local backend runs jobs in parallel on this machine,
# at most --max-jobs at once (run.sh passes --nj); each job's output goes to its own log.
export train_cmd="serkit-run --backend local"
