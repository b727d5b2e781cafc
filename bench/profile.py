"""Profile the check path in-process: ``python -m bench.profile [--cold] [--requests N]``.

Drives the check listener's protocol (uvicorn's, as ``serve`` runs it; with ``--asgi`` the
check endpoint alone, without HTTP) without sockets, on uvloop, with the benchmark request
(``--tracing``: every check traced, spans exported nowhere), and prints the microseconds per request, then a pyinstrument call tree (``pip install pyinstrument``; the
``bench`` extra installs it). For a live server under load use py-spy instead, e.g.
``py-spy record -p <ztauthz pid> -f raw -o profile.txt`` while wrk runs.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from app.main import event_loop_factory
from bench import callgrind, inprocess, policies


async def _profile(
    requests: int, cold: bool, alg: str, rules: int, profile: bool, asgi: bool, tracing: bool
) -> None:
    with tempfile.TemporaryDirectory(prefix="ztauthz-profile-") as tmp:
        work = Path(tmp)
        policy_dir = policies.write_policy_dir(work / "policies", rules)
        with inprocess.dev_issuer(work) as issuer:
            settings = inprocess.settings_for(issuer.url, policy_dir)
            tokens = issuer.tokens(requests, alg) if cold else [issuer.token(alg)]
            repeat = 1 if cold else requests
            async with inprocess.running(settings, tracing) as runtime:
                driver: inprocess.AsgiDriver | inprocess.ProtocolDriver = (
                    inprocess.AsgiDriver(runtime) if asgi else inprocess.ProtocolDriver(runtime)
                )
                await driver.run(tokens[:50] if cold else tokens, 50 if not cold else 1)
                if not profile:
                    with callgrind.measured():  # python -m bench.callgrind counts this alone
                        seconds = await driver.run(tokens, repeat)
                    print(f"{seconds / requests * 1e6:.1f} us per request; {driver.statuses}")
                    return
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0001, async_mode="disabled")
                profiler.start()
                seconds = await driver.run(tokens, repeat)
                profiler.stop()
                print(f"{seconds / requests * 1e6:.1f} us per request; statuses {driver.statuses}")
                print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--cold", action="store_true", help="a different token every request")
    parser.add_argument("--alg", choices=("RS256", "ES256"), default="RS256")
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--no-profile", action="store_true", help="only time the requests")
    parser.add_argument(
        "--asgi", action="store_true", help="the check endpoint alone, without HTTP"
    )
    parser.add_argument("--tracing", action="store_true", help="trace every check")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:  # uvloop, as serve
        runner.run(
            _profile(
                args.requests,
                args.cold,
                args.alg,
                args.rules,
                not args.no_profile,
                args.asgi,
                args.tracing,
            )
        )


if __name__ == "__main__":
    main()
