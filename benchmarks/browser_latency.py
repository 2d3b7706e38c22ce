"""Mouse-up -> prediction painted, in real headless Chromium: the app at 3cfcb59 against today's.

    python benchmarks/browser_latency.py --strokes 20

Serves both apps with `streamlit run` (the old one from a temporary `git worktree` of BASELINE,
each on its own shipped models), draws the same single-stroke digits in both, taking turns
(old, new, new, old, ...) so both see the same machine, and prints the median and p90.

Each measured stroke starts on a cleared canvas, so the prediction appears rather than maybe
keeping its text. Both instants are taken in the browser: the pen's lift from the pointerup
event where the canvas lives (its iframe, or the page), the prediction from a MutationObserver
in the page, at the next animation frame (the one that paints it); both on the same clock,
performance.timeOrigin + the document's own time.

Needs Chromium at /usr/bin/chromium, Playwright, and streamlit-drawable-canvas for the old
app (requirements-dev.txt). Run it on an otherwise idle machine: it times a page.
"""

import argparse
import contextlib
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from baseline import BASELINE, baseline_worktree
from playwright.sync_api import Frame, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
VIEWPORT = {"width": 1400, "height": 1200}
START_TIMEOUT_S = 90
TIMEOUT_MS = 30_000
SETTLE_MS = 400  # idle time before each stroke, the same for both apps
MOUSE_STEP = 12  # px between mouse events, as in tests/test_browser.py
PREDICTION = r"\d+(?:\.\d+)?\s?% probability"

CIRCLE = [
    (round(140 + 60 * math.sin(step * math.pi / 8)), round(140 - 95 * math.cos(step * math.pi / 8)))
    for step in range(17)
]
# one stroke per digit, in canvas pixels (280 x 280), none starting in the old toolbar's strip
DIGITS = {
    "0": CIRCLE,
    "1": [(140, 40), (140, 245)],
    "2": [(80, 85), (140, 45), (200, 85), (190, 140), (80, 240), (210, 240)],
    "3": [(80, 60), (200, 60), (130, 140), (200, 190), (150, 245), (80, 230)],
    "4": [(150, 40), (70, 170), (210, 170)],
    "5": [(200, 50), (95, 50), (90, 130), (170, 130), (200, 185), (150, 240), (80, 225)],
    "6": [(180, 50), (100, 130), (90, 210), (140, 245), (190, 210), (170, 160), (100, 170)],
    "7": [(70, 50), (210, 50), (120, 245)],
    "8": [(140, 140), (190, 90), (140, 45), (90, 90), (140, 140), (195, 195), (140, 245)]
    + [(85, 195), (140, 140)],
    "9": [(190, 90), (140, 50), (90, 90), (140, 130), (190, 90), (180, 245)],
}

# Installed in the page: remembers when the prediction text first appears after arm().
WATCH_PREDICTION = """pattern => {
    const regex = new RegExp(pattern);
    const shown = () => [...document.querySelectorAll("[data-testid=stMarkdownContainer]")]
        .some(element => regex.test(element.textContent));
    window.__bench = {armed: false, painted: null, shown};
    new MutationObserver(() => {
        const bench = window.__bench;
        if (!bench.armed || bench.painted !== null || !shown()) return;
        bench.armed = false;
        requestAnimationFrame(() => {
            bench.painted = performance.timeOrigin + performance.now();
        });
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""
ARM = "() => { window.__bench.painted = null; window.__bench.armed = true; }"
# Installed where the canvas lives: the instant the pen lifts (the event's own time stamp).
WATCH_PEN = """() => {
    window.__penUp = null;
    if (window.__penWatched) return;
    window.__penWatched = true;
    const up = event => {
        window.__penUp ??= performance.timeOrigin + event.timeStamp;
    };
    window.addEventListener("pointerup", up, true);
    window.addEventListener("mouseup", up, true);
}"""


@dataclass
class App:
    """One served app and how to draw on it, clear it and see its prediction."""

    name: str
    frame: str | None  # the canvas component's iframe; None: it renders in the page itself
    surface: str  # the element the pen lands on, inside that frame
    clear: Callable[[Page, "App"], None]
    page: Page | None = None
    times_ms: list[float] = field(default_factory=list)

    def scope(self):
        """Where the canvas lives: its iframe, or the page."""
        return self.page if self.frame is None else self.page.frame_locator(self.frame)

    def canvas_frame(self) -> Frame:
        if self.frame is None:
            return self.page.main_frame
        return self.page.locator(self.frame).element_handle().content_frame()


def clear_old(page: Page, app: App) -> None:
    """The old app's Clear is a Streamlit button: it remounts the canvas with a new key."""
    keyed = page.locator("[class*=st-key-canvas-]").first.get_attribute("class")
    generation = int(re.search(r"st-key-canvas-(\d+)", keyed).group(1))
    page.get_by_role("button", name="Clear").click()
    page.locator(f".st-key-canvas-{generation + 1} {app.surface}").wait_for()
    expect(page.locator(app.surface)).to_have_count(1)  # the cleared canvas has gone
    wait_idle(page)


def clear_new(page: Page, app: App) -> None:
    """The new surface's own Clear, beside it; a no-op (disabled) when nothing is drawn."""
    button = app.scope().get_by_role("button", name="Clear")
    if button.is_enabled():
        button.click()
    wait_idle(page)


def wait_idle(page: Page) -> None:
    page.wait_for_function("() => !window.__bench.shown()", timeout=TIMEOUT_MS)
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for(
        state="attached"
    )


def free_port(start: int) -> int:
    for port in range(start, start + 100):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port in {start}-{start + 99}")


def serve(folder: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.fileWatcherType", "none"]
    command += ["--browser.gatherUsageStats", "false"]
    env = {key: value for key, value in os.environ.items() if key != "VIT_DIGITS_MODELS_DIR"}
    with log.open("w") as output:
        # its own process group: stopping it stops anything it started
        return subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"streamlit exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.25)
    raise SystemExit(f"streamlit did not listen on port {port} within {START_TIMEOUT_S} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def open_app(browser, app: App, url: str) -> None:
    context = browser.new_context(viewport=VIEWPORT)  # its own Streamlit session
    app.page = page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    app.scope().locator(app.surface).wait_for()
    page.evaluate(WATCH_PREDICTION, PREDICTION)
    wait_idle(page)


def draw(page: Page, app: App, points: list[tuple[int, int]]) -> None:
    surface = app.scope().locator(app.surface)
    box = surface.bounding_box()
    scale = box["width"] / 280
    x, y = box["x"], box["y"]
    page.mouse.move(x + points[0][0] * scale, y + points[0][1] * scale)
    page.mouse.down()
    for previous, (px, py) in zip(points, points[1:], strict=False):
        steps = max(2, round(math.dist(previous, (px, py)) / MOUSE_STEP))
        page.mouse.move(x + px * scale, y + py * scale, steps=steps)
    page.mouse.up()


def measure(app: App, points: list[tuple[int, int]]) -> float:
    """One stroke on a cleared canvas: milliseconds from the pen's lift to the prediction."""
    page = app.page
    app.clear(page, app)
    frame = app.canvas_frame()  # after Clear: the old app's canvas is a new one
    frame.evaluate(WATCH_PEN)
    page.wait_for_timeout(SETTLE_MS)
    page.evaluate(ARM)
    draw(page, app, points)
    page.wait_for_function("() => window.__bench.painted !== null", timeout=TIMEOUT_MS)
    painted = page.evaluate("() => window.__bench.painted")
    pen_up = frame.evaluate("() => window.__penUp")
    if pen_up is None:
        raise RuntimeError(f"{app.name}: the canvas saw no pointerup")
    return painted - pen_up


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def report(old: App, new: App) -> None:
    print(f"\nmouse-up -> prediction painted, {len(old.times_ms)} strokes each (ms)")
    print(f"{'app':<32}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}")
    for app in (old, new):
        t = app.times_ms
        print(
            f"{app.name:<32}{statistics.median(t):>9.0f}{percentile(t, 0.9):>9.0f}"
            f"{min(t):>9.0f}{max(t):>9.0f}"
        )
    ratio = statistics.median(new.times_ms) / statistics.median(old.times_ms)
    p90_ratio = percentile(new.times_ms, 0.9) / percentile(old.times_ms, 0.9)
    print(f"ratio new/old: median {ratio:.2f}x, p90 {p90_ratio:.2f}x")


def run(args: argparse.Namespace, worktree: Path, logs: Path, processes: list) -> None:
    # streamlit-drawable-canvas 0.13 is a components.v2 component: no iframe
    old = App(f"old ({BASELINE})", None, "canvas.upper-canvas", clear_old)
    new = App("new (working tree)", "iframe[title*=stroke_canvas]", "#surface", clear_new)
    urls = {}
    for app, folder, offset in ((old, worktree, 0), (new, args.new_app.parent, 1)):
        port = free_port(args.port_base + offset * 100)
        log = logs / f"{'old' if app is old else 'new'}.log"
        processes.append(process := serve(folder, port, log))
        wait_for_port(port, process, log)
        urls[app.name] = f"http://127.0.0.1:{port}"
        print(f"{app.name}: {urls[app.name]}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for app in (old, new):
                open_app(browser, app, urls[app.name])
            shapes = list(DIGITS.values())
            for i in range(args.strokes):
                order = (old, new) if i % 2 == 0 else (new, old)
                for app in order:
                    app.times_ms.append(measure(app, shapes[i % len(shapes)]))
                print(
                    f"stroke {i + 1:>3}: old {old.times_ms[-1]:6.0f} ms, "
                    f"new {new.times_ms[-1]:6.0f} ms",
                    flush=True,
                )
        finally:
            with contextlib.suppress(Exception):  # Ctrl-C reaches Chromium too
                browser.close()
    report(old, new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strokes", type=int, default=20, help="strokes per app (default 20)")
    parser.add_argument(
        "--port-base",
        type=int,
        default=8700,
        help="first port tried for the old app; the new one from port-base + 100 (default 8700)",
    )
    parser.add_argument(
        "--new-app",
        type=Path,
        default=ROOT / "app.py",
        help="the new app's script, served from its folder (default: this tree's app.py)",
    )
    args = parser.parse_args()
    if args.strokes < 1:
        parser.error("--strokes must be at least 1")
    if args.new_app.name != "app.py":
        parser.error(
            "--new-app must be a file named app.py (it is served as `streamlit run app.py`)"
        )
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install -y chromium")
    # a plain kill (SIGTERM) cleans up like Ctrl-C
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    processes: list[subprocess.Popen] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="browser-latency-") as logs,
            baseline_worktree() as tree,
        ):
            try:
                run(args, tree, Path(logs), processes)
            finally:  # the servers stop before their worktree goes
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop this
                for process in processes:
                    stop(process)
    except KeyboardInterrupt:
        print("\ninterrupted: the servers stopped and the worktree removed", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
