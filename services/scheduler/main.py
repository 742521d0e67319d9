"""Container entry point of the Scheduler service: flags and BOBENCH_* env as in
`python -m bobench.rpc.scheduler_service --help`."""

from bobench.rpc.scheduler_service import main

if __name__ == "__main__":
    raise SystemExit(main())
