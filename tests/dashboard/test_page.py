"""The dashboard page in a real headless Chromium, against the real app on the real Redis fed
with real Frame and Label messages: the MJPEG video plays, the charts have time axes and a
legend, an ended track leaves the charts, the page says when the pipeline stopped and goes
live again, and nothing overflows from a phone to a wide screen (screenshots are saved)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the dashboard extra is not installed")
pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
pytestmark = [pytest.mark.redis, pytest.mark.slow]

from fer_pipeline import health  # noqa: E402
from fer_pipeline.dashboard import state as dashboard_state  # noqa: E402
from fer_pipeline.streams import LOGGER_GROUP  # noqa: E402
from tests.dashboard.live import Camera, Server  # noqa: E402

ARTIFACTS = Path(os.environ.get("FER_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "out" / "test-artifacts"))
WIDTHS = {390: 1500, 1024: 1000, 1920: 1080}  # viewport width: height of the screenshot
CLOCK = re.compile(r"^\d{2}:\d{2}:\d{2}$")


@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1920,1080"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser, script: str, what: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def viewport(browser, width: int, height: int) -> None:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


TRACKS = "[...document.querySelectorAll('.camera[data-camera=door] .track')].map(t => t.dataset.track)"


def test_the_page_live_then_stopped_then_live_again(redis_settings, real_transport, browser, monkeypatch, tmp_path):
    # Shorter than the defaults so the test takes seconds; the logic is the same.
    monkeypatch.setattr(dashboard_state, "TRACK_END_S", 2.0)
    monkeypatch.setattr(dashboard_state, "STALE_AFTER_S", 2.0)
    t = real_transport
    t.ensure_group(t.keys.labels, LOGGER_GROUP)  # a consumer group for the health panel
    for role in ("producer", "worker"):
        health.beat(t, role, f"{role}-1", 60.0, {"role": role})
    with (Server(redis_settings, t) as server, Camera(t, fps=10) as camera,
          Camera(t, camera="lobby", fps=5, tracks=(7,)) as lobby):
        viewport(browser, 1920, 1080)
        browser.get(server.url + "/")

        # Video: the MJPEG stream plays in a plain <img>.
        wait_for(browser, "const i = document.querySelector('.camera img');"
                          "return i && i.complete && i.naturalWidth > 0", "the video")
        src = browser.execute_script("return document.querySelector('.camera img').src")
        assert "/api/stream/door" in src
        first = int(wait_for(browser, "return document.querySelector('.camera')?.dataset.frameIndex", "a frame index"))
        wait_for(browser, f"return Number(document.querySelector('.camera').dataset.frameIndex) > {first} + 3",
                 "the video to move on")
        assert wait_for(browser, "return document.body.dataset.live", "the page state") == "live"

        # Charts: one per track, with uPlot's axes, clock-time tick labels and the emotions' legend.
        assert wait_for(browser, f"return {TRACKS}.length === 2 && {TRACKS}", "a chart per track") == ["0", "1"]
        wait_for(browser, "return [...document.querySelectorAll('.track .plot')].every(p => p.dataset.points > 5)",
                 "the charts to fill")
        axes = browser.execute_script("return [...document.querySelectorAll('.track')].map("
                                      "t => t.querySelectorAll('.u-axis').length)")
        assert axes == [2, 2, 2]  # door's two tracks, lobby's one
        ticks = wait_for(browser, "return document.querySelector('.track .plot').dataset.xTicks", "time labels").split()
        assert len(ticks) >= 2 and all(CLOCK.match(t) for t in ticks), ticks
        legend = browser.execute_script("return [...document.querySelector('.track .u-legend')"
                                        ".querySelectorAll('.u-series th')].map(th => th.textContent)")
        assert {"happy", "sad", "surprise", "neutral", "angry", "fear", "disgust"} <= set(legend)
        assert "~" in browser.find_element("css selector", ".camera figcaption").text  # the mark is explained

        # Track 1 leaves the picture: its chart goes, it is listed under the ended tracks.
        camera.tracks = (0,)
        wait_for(browser, f"return {TRACKS}.join() === '0'", "the ended track's chart to go", timeout=15)
        ended = browser.execute_script("return [...document.querySelectorAll('.camera details.ended li')]"
                                       ".map(li => li.dataset.track)")
        assert ended == ["1"]

        time.sleep(4)  # a few more seconds of charts for the screenshots

        # From a phone to a wide screen: nothing wider than the window; screenshots.
        shots = tmp_path / "screens"
        shots.mkdir()
        for width, height in WIDTHS.items():
            viewport(browser, width, height)
            time.sleep(1.2)  # a refresh and the charts' resize
            sizes = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth,"
                                           " document.querySelector('.track .uplot').offsetWidth,"
                                           " document.querySelector('.track').clientWidth]")
            assert sizes[1] == width and sizes[0] <= sizes[1], sizes
            assert 0 < sizes[2] <= sizes[3], sizes  # the chart follows its box
            # One legend per camera on a narrow card, uPlot's (with values under the cursor) per chart on a wide one.
            legends = browser.execute_script("const d = (s) => getComputedStyle(document.querySelector(s)).display;"
                                             "return [d('.camera .camlegend'), d('.camera .u-legend'),"
                                             " document.querySelector('.camera').clientWidth]")
            assert legends[:2] == (["flex", "none"] if legends[2] < 820 else ["none", "block"]), legends
            assert browser.save_screenshot(str(shots / f"dashboard-{width}.png"))

        # The pipeline stops: the page says so and greys the video; it comes back by itself.
        viewport(browser, 1024, 1000)
        camera.paused.set()  # one camera stops: that camera says so, the page is still live
        wait_for(browser, "return document.querySelector('.camera[data-camera=door]').classList.contains('stale')",
                 "the stopped camera", timeout=10)
        assert browser.execute_script("return document.getElementById('banner').hidden && document.body.dataset.live"
                                      " === 'live' && document.querySelector('.camera[data-camera=door] .badge')"
                                      ".textContent.startsWith('stopped')")
        lobby.paused.set()  # all stopped: the banner
        wait_for(browser, "return !document.getElementById('banner').hidden && document.body.dataset.live", "a banner",
                 timeout=10)
        assert browser.execute_script("return document.body.dataset.live") == "stopped"
        banner = browser.find_element("css selector", "#banner").text
        assert "stopped" in banner and "no new frames or labels" in banner
        assert browser.execute_script("return document.querySelector('.camera').classList.contains('stale') &&"
                                      " getComputedStyle(document.querySelector('.camera img')).filter") != "none"
        assert browser.save_screenshot(str(shots / "dashboard-stopped-1024.png"))
        camera.paused.clear()
        lobby.paused.clear()
        wait_for(browser, "return document.getElementById('banner').hidden && document.body.dataset.live === 'live'",
                 "the page to go live again", timeout=10)
        assert not browser.execute_script("return document.querySelector('.camera').classList.contains('stale')")

        errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert errors == [], errors

        # The server goes away: offline, said so.
        server.server.should_exit = True
        wait_for(browser, "return document.body.dataset.live === 'offline' && !document.getElementById('banner').hidden",
                 "the offline banner", timeout=10)
        assert "unreachable" in browser.find_element("css selector", "#banner").text

    for shot in shots.iterdir():
        assert shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for shot in shots.iterdir():
        shutil.copy(shot, ARTIFACTS / shot.name)
