"""``ztauthz dev dpop-key`` and ``ztauthz dev dpop-proof``: what a DPoP client does (RFC 9449),
for the local stack and by hand. A bound token comes from ``ztauthz dev token --dpop-key``.

    ztauthz dev dpop-key --out .dev/dpop.pem            # prints the key's jkt
    TOKEN=$(ztauthz dev token --aud https://api.example.com --dpop-key .dev/dpop.pem ...)
    curl -H "Authorization: DPoP $TOKEN" \\
         -H "DPoP: $(ztauthz dev dpop-proof --key .dev/dpop.pem --url http://127.0.0.1:10000/invoices --token "$TOKEN")" \\
         http://127.0.0.1:10000/invoices
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2
# The key types a dev DPoP client makes, defined here so that building the parser loads nothing.
DPOP_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")


def add_dpop_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    key = commands.add_parser(
        "dpop-key",
        help="create a DPoP client key and print its thumbprint (cnf.jkt)",
        description="Write a new private key (PEM, 0600) for DPoP proofs and print its RFC 7638 "
        "thumbprint: the cnf.jkt of tokens bound to it.",
    )
    key.add_argument("--out", type=Path, required=True, help="where to write the key (PEM)")
    key.add_argument("--alg", choices=DPOP_ALGORITHMS, default="ES256", help="the key's algorithm")
    key.add_argument("--force", action="store_true", help="replace an existing file")
    key.set_defaults(func=_cmd_key)

    proof = commands.add_parser(
        "dpop-proof",
        help="sign a DPoP proof for one request",
        description="Print a DPoP proof (RFC 9449 section 4) for METHOD URL, bound to the access "
        "token (ath) and, when given, the server's nonce.",
    )
    proof.add_argument("--key", type=Path, required=True, help="the key from dev dpop-key")
    proof.add_argument("--alg", choices=DPOP_ALGORITHMS, help="default: by the key's type")
    proof.add_argument("--method", default="GET", help="the request method (GET)")
    proof.add_argument("--url", required=True, help="the URL the request is sent to")
    proof.add_argument("--token", help="the access token sent with the proof (sets ath)")
    proof.add_argument("--nonce", help="the server's DPoP-Nonce, when it asks for one")
    proof.set_defaults(func=_cmd_proof)


def _fail(command: str, exc: Exception) -> int:
    print(f"ztauthz dev {command}: {exc}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_key(args: argparse.Namespace) -> int:
    from app.dev.dpop import DpopKey

    if args.out.exists() and not args.force:
        return _fail("dpop-key", FileExistsError(f"{args.out} exists (use --force to replace)"))
    key = DpopKey.generate(args.alg)
    try:
        key.save(args.out)
    except OSError as exc:
        return _fail("dpop-key", exc)
    print(key.jkt)
    return EXIT_OK


def _cmd_proof(args: argparse.Namespace) -> int:
    from app.dev.dpop import DpopKey

    try:
        key = DpopKey.load(args.key, args.alg)
        value = key.proof(args.method, args.url, access_token=args.token, nonce=args.nonce)
    except (OSError, ValueError, TypeError) as exc:
        return _fail("dpop-proof", exc)
    print(value)
    return EXIT_OK
