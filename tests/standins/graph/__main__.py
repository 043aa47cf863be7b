"""``python -m standins.graph``: the Graph stand-in as a process (prints ``READY {json}``)."""

from __future__ import annotations

from standins.cli import signing_key, stand_in_parser
from standins.graph.auth import GRAPH_AUDIENCES, accept_any_token
from standins.graph.server import GraphStandIn


def main(argv: list[str] | None = None) -> None:
    parser = stand_in_parser(
        "graph", "Microsoft Graph mail stand-in on loopback (prints READY {json})."
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per Graph request")
    parser.add_argument(
        "--audience", action="append", default=None, help="accepted token resource (repeatable)"
    )
    parser.add_argument(
        "--submit-lag",
        type=float,
        default=0.0,
        help="seconds a sent draft still reads as a draft before Exchange moves it",
    )
    parser.add_argument(
        "--transit",
        type=float,
        default=0.0,
        help="then seconds it is found nowhere, before it is in Sent Items",
    )
    parser.add_argument("--no-auth", action="store_true", help="accept any bearer token")
    parser.add_argument("--concurrency-limit", type=int, default=4, help="0: unlimited")
    args = parser.parse_args(argv)
    GraphStandIn(
        port=args.port,
        port_fallback=args.port_fallback,
        latency_seconds=args.latency,
        audiences=args.audience or GRAPH_AUDIENCES,
        token_verifier=accept_any_token if args.no_auth else None,
        concurrency_limit=args.concurrency_limit or None,
        submit_lag_seconds=args.submit_lag,
        transit_seconds=args.transit,
        signing_key=signing_key(args),
    ).run_cli()


if __name__ == "__main__":
    main()
