"""Under load: 4 browser tabs draw at once; mouse-up -> prediction painted, p50 and p95.

    python benchmarks/browser_load.py --tabs 4 --rounds 15

Serves this tree's app (`streamlit run app.py`, the shipped models), opens `--tabs` pages, each
in its own browser context (its own Streamlit session), and in every round clears every tab,
then draws one digit in each, one tab right after the other, so that the tabs' reruns overlap on
the server. Each tab's time runs from its own pen lift to its own prediction painted, both taken
in the browser as `benchmarks/browser_latency.py` takes them (its instruments are reused here).
The server's memory (VmRSS of the streamlit process) is printed before and after.

Needs Chromium at /usr/bin/chromium and Playwright. Run it on an otherwise idle machine.
"""

import argparse
import contextlib
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_latency import (  # noqa: E402  (a sibling script, not a package)
    ARM,
    CHROMIUM,
    CHROMIUM_ARGS,
    DIGITS,
    PREDICTION,
    TIMEOUT_MS,
    VIEWPORT,
    WATCH_PEN,
    WATCH_PREDICTION,
    App,
    clear_new,
    draw,
    free_port,
    percentile,
    serve,
    stop,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[1]
SURFACE_FRAME, SURFACE = "iframe[title*=stroke_canvas]", "#surface"


def rss_mb(pid: int) -> float:
    """The process's resident memory (VmRSS) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_tab(browser, url: str, index: int) -> App:
    app = App(f"tab {index + 1}", SURFACE_FRAME, SURFACE, clear_new)
    context = browser.new_context(viewport=VIEWPORT)
    app.page = page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    app.scope().locator(SURFACE).wait_for()
    page.evaluate(WATCH_PREDICTION, PREDICTION)
    return app


def one_round(tabs: list[App], shapes: list) -> None:
    """Clear every tab, then draw in each, one right after the other; collect each tab's time."""
    for tab in tabs:
        tab.clear(tab.page, tab)
    frames = []
    for tab in tabs:
        frame = tab.canvas_frame()
        frame.evaluate(WATCH_PEN)
        tab.page.evaluate(ARM)
        frames.append(frame)
    for i, tab in enumerate(tabs):
        draw(tab.page, tab, shapes[i % len(shapes)])
    for tab, frame in zip(tabs, frames, strict=True):
        tab.page.wait_for_function("() => window.__bench.painted !== null", timeout=TIMEOUT_MS)
        painted = tab.page.evaluate("() => window.__bench.painted")
        pen_up = frame.evaluate("() => window.__penUp")
        if pen_up is None:
            raise RuntimeError(f"{tab.name}: the canvas saw no pointerup")
        tab.times_ms.append(painted - pen_up)


def report(tabs: list[App], rss_before: float, rss_after: float) -> None:
    times = [t for tab in tabs for t in tab.times_ms]
    print(f"\n{len(tabs)} tabs drawing at once, {len(times)} predictions in all")
    print("pen lift -> prediction painted, ms")
    print(f"{'':<10}{'p50':>8}{'p95':>8}{'max':>8}")
    for tab in tabs:
        t = tab.times_ms
        print(
            f"{tab.name:<10}{statistics.median(t):>8.0f}{percentile(t, 0.95):>8.0f}{max(t):>8.0f}"
        )
    print(
        f"{'all':<10}{statistics.median(times):>8.0f}{percentile(times, 0.95):>8.0f}"
        f"{max(times):>8.0f}"
    )
    print(f"server memory (VmRSS): {rss_before:.0f} MB before, {rss_after:.0f} MB after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tabs", type=int, default=4, help="tabs drawing at once (default 4)")
    parser.add_argument(
        "--rounds", type=int, default=15, help="strokes per tab, all tabs at once (default 15)"
    )
    parser.add_argument("--port", type=int, default=8900, help="first port tried (default 8900)")
    args = parser.parse_args()
    if args.tabs < 1 or args.rounds < 1:
        parser.error("--tabs and --rounds must be at least 1")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install -y chromium")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="browser-load-") as tmp:
        port = free_port(args.port)
        log = Path(tmp) / "streamlit.log"
        process = serve(ROOT, port, log)
        try:
            wait_for_port(port, process, log)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    url = f"http://127.0.0.1:{port}"
                    tabs = [open_tab(browser, url, i) for i in range(args.tabs)]
                    shapes = list(DIGITS.values())
                    one_round(tabs, shapes)  # warm-up, not counted
                    for tab in tabs:
                        tab.times_ms.clear()
                    rss_before = rss_mb(process.pid)
                    for r in range(args.rounds):
                        one_round(tabs, shapes[r % len(shapes) :] + shapes[: r % len(shapes)])
                        last = ", ".join(f"{tab.times_ms[-1]:.0f}" for tab in tabs)
                        print(f"round {r + 1:>3}: {last} ms", flush=True)
                    report(tabs, rss_before, rss_mb(process.pid))
                finally:
                    with contextlib.suppress(Exception):
                        browser.close()
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the server", file=sys.stderr)
            sys.exit(130)
        finally:
            stop(process)


if __name__ == "__main__":
    main()
