"""A Dask cluster on SLURM for `dipcert sweep --scheduler`, through dask-jobqueue.

Starts a scheduler in this process, submits ``--jobs`` SLURM jobs, each running ``--cores /
--threads`` worker processes of one cell at a time with ``--threads`` torch threads, prints the
scheduler's address, and keeps the cluster up until Ctrl-C. In another shell::

    dipcert sweep my-sweep.toml --out out/my-sweep --scheduler tcp://HOST:PORT

Needs ``pip install dask-jobqueue`` in the environment that has dipcert (the jobs start workers with
the same Python, so the versions match, which every task checks). Not tested on a real queue here;
see docs/cluster.md.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs (one node each)")
    parser.add_argument("--cores", type=int, default=16, help="cores per job")
    parser.add_argument("--memory", default="64GiB", help="memory per job")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per cell")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    args = parser.parse_args()
    if args.cores % args.threads:
        parser.error("--cores must be a multiple of --threads")

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    processes = args.cores // args.threads
    cluster = SLURMCluster(
        cores=processes,  # one Dask thread per worker process: one cell at a time each
        processes=processes,
        memory=args.memory,
        walltime=args.walltime,
        queue=args.partition,
        account=args.account,
        job_cpu=args.cores,  # SLURM reserves every core; torch uses them through DIPCERT_THREADS
        job_script_prologue=[f"export DIPCERT_THREADS={args.threads}"],
        scheduler_options={"dashboard_address": None},
    )
    cluster.scale(jobs=args.jobs)
    print(cluster.job_script())
    print(f"scheduler: {cluster.scheduler_address}  (dipcert sweep FILE --scheduler {cluster.scheduler_address})",
          flush=True)
    with Client(cluster) as client:
        try:
            while True:
                time.sleep(30)
                print(f"{len(client.scheduler_info()['workers'])} worker process(es) connected", flush=True)
        except KeyboardInterrupt:
            pass
    cluster.close()


if __name__ == "__main__":
    main()
