"""`python -m bobench.stack up|down|status` (what `make up` / `make down` call)."""

from __future__ import annotations

import argparse
import json
import logging

from bobench.errors import BobenchError
from bobench.exit_codes import report_exit
from bobench.logs import setup_logging

DEMO_SPEC = "examples/offline-battle.yaml"


def _served_backbones(flag: str | None) -> tuple[str, ...]:
    """--backbones, else every backbone of the demo spec (so `bob battle submit` of it works), else toy."""
    from pathlib import Path

    if flag:
        return tuple(b.strip() for b in flag.split(",") if b.strip())
    if Path(DEMO_SPEC).is_file():
        from bobench.battle.spec import load_spec

        return load_spec(DEMO_SPEC).backbones
    return ("toy",)


def main(argv: list[str] | None = None) -> int:
    from bobench.stack import DEFAULT_STATE_DIR, down, public_state, up

    p = argparse.ArgumentParser(prog="python -m bobench.stack", description="local bobench stack on loopback")
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where stack.json and logs/ live")
    p.add_argument("--evaluators", type=int, default=1, help="evaluator processes to start")
    p.add_argument(
        "--no-embedder", action="store_true", help="do not start Triton (evaluators embed in process)"
    )
    p.add_argument(
        "--backbones",
        default=None,
        help="comma-separated backbones published to Triton at up (default: those of "
        "examples/offline-battle.yaml, or toy when that spec is absent); others are published when a "
        "battle first needs them",
    )
    args = p.parse_args(argv)
    setup_logging(logging.INFO)
    try:
        if args.action == "up":
            state = up(
                args.state_dir,
                evaluators=args.evaluators,
                embedder=not args.no_embedder,
                embedder_backbones=_served_backbones(args.backbones),
            )
            for s in state["services"]:
                print(
                    f"{s['name']:<12} pid {s['pid']:<8} {s['address']:<22} metrics {s['metrics_address'] or '-'}"
                )
            for note in state["notes"]:
                print(f"note: {note}")
            print(f"state: {args.state_dir}/stack.json; logs: {args.state_dir}/logs/")
            print(f"secrets (S3 secret key, Triton keys, tokens): {state['secrets']} (mode 0600)")
        elif args.action == "down":
            print("stopped: " + (", ".join(down(args.state_dir)) or "nothing was running"))
        else:
            print(json.dumps(public_state(args.state_dir), indent=2))  # never a secret
    except BobenchError as exc:  # bobench.exit_codes: 2 for a bad setting, 3 for a service that did not start
        return report_exit(exc, "stack")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
