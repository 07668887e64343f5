"""Running commands as job arrays: the local backend, Slurm, and one process per output folder."""
