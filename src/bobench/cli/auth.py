"""`bob auth token`: create a bearer token for the services' tokens file (bobench.rpc.auth_tokens)."""

from __future__ import annotations

import argparse
import sys

from bobench.errors import InvalidArgument


def register(sub: argparse._SubParsersAction) -> None:
    from bobench.rpc.auth_tokens import ROLES

    parser = sub.add_parser("auth", help="credentials for the evaluator and scheduler services")
    actions = parser.add_subparsers(dest="auth_command", metavar="ACTION", required=True)
    token = actions.add_parser(
        "token",
        help="create a token: print it once, append only its SHA-256 to the tokens file",
    )
    token.add_argument("--identity", required=True, help="who the token stands for (battles are owned by it)")
    token.add_argument("--roles", required=True, help=f"comma-separated roles: {', '.join(ROLES)}")
    token.add_argument(
        "--tokens-file",
        help="the services' tokens file (default: setting auth_tokens_file, env BOBENCH_AUTH_TOKENS_FILE)",
    )
    token.set_defaults(func=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    from bobench.rpc.auth_tokens import new_token

    tokens_file = args.tokens_file
    if not tokens_file:
        from bobench.cli.common import settings_from

        tokens_file = settings_from(args).auth_tokens_file
    if not tokens_file:
        raise InvalidArgument("--tokens-file is required (or set BOBENCH_AUTH_TOKENS_FILE)")
    token = new_token(tokens_file, args.identity, args.roles)
    sys.stdout.write(token + "\n")
    print(
        f"token for {args.identity!r} added to {tokens_file} (only its hash is stored; this is the "
        "only time it is shown)",
        file=sys.stderr,
    )
    return 0
