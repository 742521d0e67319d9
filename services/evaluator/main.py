"""Entry point of the Evaluator service process (the container's command).

All wiring lives in the library (`bobench.rpc.evaluator_service.main`); flags and BOBENCH_* environment
variables are documented there (`python services/evaluator/main.py --help`).
"""

from bobench.rpc.evaluator_service import main

if __name__ == "__main__":
    raise SystemExit(main())
