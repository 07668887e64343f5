# How jobs run (Kaldi convention). serkit-run's local backend runs jobs in parallel on this machine,
# at most --max-jobs at once (run.sh passes --nj); each job's output goes to its own log.
export train_cmd="serkit-run --backend local"
# On a Slurm cluster (docs/cluster.md): one array job per stage, --nj tasks at a time, and
# ../../conf/slurm.conf maps --gpu/--mem/--time/--partition/--account to sbatch options.
# export train_cmd="serkit-run --backend slurm --config ../../conf/slurm.conf --gpu 1 --mem 32G --time 1-00:00:00"
