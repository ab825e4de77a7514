"""`python -m dth.devtools.thread_profile OUT.prof ARGS...`: run `dth ARGS...` with cProfile in every thread
(cProfile alone sees only the main thread, and the engines copy in worker threads), and write the merged
statistics to OUT.prof for `pstats`. For benchmarks that must say where a missed target's CPU goes."""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
from collections.abc import Callable


def profiled(run: Callable[[], int], out: str) -> int:
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original = threading.Thread.run

    def run_profiled(thread: threading.Thread) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original(thread)
        finally:
            profile.disable()

    threading.Thread.run = run_profiled  # type: ignore[method-assign,assignment]
    main = cProfile.Profile()
    profiles.append(main)
    main.enable()
    try:
        code = run()
    finally:
        main.disable()
        threading.Thread.run = original  # type: ignore[method-assign]
        with lock:
            stats = pstats.Stats(profiles[0])
            for profile in profiles[1:]:
                stats.add(profile)
        stats.dump_stats(out)
    return code


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m dth.devtools.thread_profile OUT.prof DTH-ARGS...", file=sys.stderr)
        return 2
    from dth.cli.main import main as dth_main

    out, arguments = argv[0], argv[1:]
    return profiled(lambda: dth_main(arguments), out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
