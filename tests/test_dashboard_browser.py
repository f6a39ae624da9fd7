"""The dashboard in Debian's headless Chromium, driven by Playwright, against the real node.

A small demo day (scale 0.05) is ingested into the test prefix and the behavioural rules run
over it, so the page shows real alerts. The app is served by uvicorn on a free loopback port.
The browser logs in with an API key, the charts must draw on their canvases, an alert is
acknowledged and an incident is created from another one (both checked through the API),
the language is switched, a revoked key sends the page back to the login form, and the page
must never ask for anything but its own origin. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from elasticsearch import Elasticsearch

from api.app import create_app
from api.dashboard import DASHBOARD_DIR
from collectors.demo_day import DemoSpec, generate_demo_day
from collectors.file_ingest import file_records, ingest_records
from collectors.normalise import Department
from detection.alert_exceptions import ExceptionStore
from detection.alerts import AlertStore
from detection.detector import DetectorContext, load_detectors
from detection.scheduler import DetectionScheduler, DetectionStateStore
from lianfang.principals import PrincipalStore, Role
from lianfang.settings import Settings
from lianfang.store import EventStore

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHARTS = ("timeseries", "breakdown", "severity", "heatmap", "assets", "sources")
TIMEOUT_MS = 20_000

# Pixels a chart has drawn: canvases start fully transparent.
PAINTED_PIXELS = """(canvas) => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted += 1;
  return painted;
}"""


def _requirements() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (`make browser` installs it)")
    if not (DASHBOARD_DIR / "index.html").is_file():
        pytest.skip(f"the dashboard is not built in {DASHBOARD_DIR} (`make web` builds it)")


@pytest.fixture
def demo_platform(
    settings: Settings, client: Elasticsearch, store: EventStore, tmp_path: Path
) -> dict[str, Any]:
    """A demo day (yesterday, scale 0.05) with the behavioural rules' alerts and an admin key."""
    _requirements()
    manifest = generate_demo_day(DemoSpec(seed=settings.demo_seed, scale=0.05), tmp_path / "demo")
    departments = {d["id"]: d for d in manifest["departments"]}
    for item in manifest["files"]:
        info = departments[item["department"]]
        report, _ = ingest_records(
            file_records(tmp_path / "demo" / item["path"]),
            settings=settings,
            store=store,
            format_name=item["format"],
            department=Department(info["id"], info["name"], info["sector"]),
        )
        assert report.dead_lettered == 0
    store.refresh()

    loaded = load_detectors(
        DetectorContext(settings, client, store.names.events_alias), ["behavioural"]
    )
    scheduler = DetectionScheduler(
        loaded.detectors,
        AlertStore(client, settings.index_prefix),
        ExceptionStore(client, settings.index_prefix),
        DetectionStateStore(client, settings.index_prefix),
    )
    day = datetime.combine(datetime.fromisoformat(manifest["day"]), day_time(), UTC)
    reports = scheduler.run_range(day, day + timedelta(days=1), timedelta(days=1), timedelta(0))
    assert not [run.error for report in reports for run in report.runs if run.error]

    principals = PrincipalStore(client, settings.index_prefix)
    principals.install()
    principals.add_user("admin", Role.ADMINISTRATOR, None)
    return {"manifest": manifest, "key": principals.create_key("admin")}


@pytest.fixture
def served(settings: Settings, demo_platform: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The app served by uvicorn on a free loopback port, in a background thread."""
    app = create_app(settings)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "app": app}
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        listener.close()


@pytest.fixture
def browser_context(served: dict[str, Any]) -> Iterator[Any]:
    """Debian's Chromium through Playwright, with a fresh profile (never a downloaded browser)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="lianfang-chromium-")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000},
            locale="en-US",
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def api_get(base_url: str, key: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{base_url}{path}", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def log_in(page: Any, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#login-submit")
    page.wait_for_selector("#tabs:not([hidden])")


def test_dashboard_in_headless_chromium(
    served: dict[str, Any], browser_context: Any, demo_platform: dict[str, Any]
) -> None:
    base_url, key = served["url"], demo_platform["key"]
    ARTIFACTS.mkdir(exist_ok=True)
    requested: list[str] = []
    failed: list[tuple[int, str]] = []
    problems: list[str] = []
    browser_context.on("request", lambda request: requested.append(request.url))
    browser_context.on(
        "response",
        lambda response: (
            failed.append((response.status, response.url)) if response.status >= 400 else None
        ),
    )
    page = browser_context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # Script errors and CSP violations; failed loads are checked by status below.
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )

    response = page.goto(f"{base_url}/")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.text_content("#login-submit") == "Log in"

    # A wrong key stays on the login form with the reason.
    page.fill("#api-key", "lf_nosuchkey_nosecret")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "not valid" in page.text_content("#login-error")
    assert page.is_hidden("#tabs")

    # The overview: key figures from the situation API and every chart drawn.
    log_in(page, key)
    page.wait_for_selector("#overview-view[data-loaded='true']")
    end = datetime.now(UTC)
    situation = api_get(
        base_url,
        key,
        "/api/v1/situation",
        start=(end - timedelta(days=7)).isoformat(),
        end=end.isoformat(),
    )
    if situation.status_code == 200:
        assert page.text_content(".source-note") == "Source: situation API"
        expected_alerts = situation.json()["alerts"]["total"]
    else:
        expected_alerts = api_get(base_url, key, "/api/v1/alerts", size=1).json()["total"]
    assert expected_alerts > 0
    alerts_figure = page.locator(".kpi[data-kpi='alerts'] .kpi-value")
    assert page.text_content(".kpi[data-kpi='alerts'] .kpi-label") == "Alerts"
    assert int(alerts_figure.text_content().replace(",", "")) == expected_alerts
    for chart in CHARTS:
        canvas = page.locator(f"#chart-{chart} canvas").first
        canvas.wait_for()
        assert canvas.evaluate(PAINTED_PIXELS) > 1000, f"chart {chart} drew nothing"
    page.screenshot(path=str(ARTIFACTS / "dashboard-en.png"), full_page=True)

    # The alert queue: acknowledge an open alert.
    page.click("#tabs a[data-view='alerts']")
    page.wait_for_selector("#alert-table tbody tr")
    open_row = page.locator("#alert-table tbody tr[data-status='open']").first
    acknowledged_id = open_row.get_attribute("data-alert-id")
    open_row.locator("button[data-action='acknowledge']").click()
    page.wait_for_selector(f"tr[data-alert-id='{acknowledged_id}'][data-status='acknowledged']")
    stored = api_get(base_url, key, f"/api/v1/alerts/{acknowledged_id}").json()
    assert stored["alert"]["status"] == "acknowledged"
    assert stored["alert"]["history"][-1]["by"] == "admin"

    # Its evidence: the events the alert was raised on, as the API gives them.
    page.locator(f"tr[data-alert-id='{acknowledged_id}'] button[data-action='details']").click()
    page.wait_for_selector("#alert-detail #evidence-table tbody tr")
    evidence = api_get(base_url, key, f"/api/v1/alerts/{acknowledged_id}/evidence").json()
    assert page.locator("#evidence-table tbody tr").count() == len(evidence["events"]) > 0

    # Assign it from its detail panel.
    page.fill("#assign-form input[name='assignee']", "wang.analyst")
    page.click("#assign-form button[type='submit']")
    page.wait_for_selector(f"tr[data-alert-id='{acknowledged_id}'] td:has-text('wang.analyst')")
    stored = api_get(base_url, key, f"/api/v1/alerts/{acknowledged_id}").json()
    assert stored["alert"]["assignee"] == "wang.analyst"
    page.screenshot(path=str(ARTIFACTS / "dashboard-alerts.png"), full_page=True)

    # Bulk: the last two open alerts acknowledged at once; the first open one stays open.
    open_rows = page.locator("#alert-table tbody tr[data-status='open']")
    assert open_rows.count() >= 3
    last = open_rows.count() - 1
    bulk_ids = [open_rows.nth(n).get_attribute("data-alert-id") for n in (last, last - 1)]
    for alert_id in bulk_ids:
        page.locator(f"tr[data-alert-id='{alert_id}'] input[type='checkbox']").check()
    assert page.text_content("#selected-count") == "2 selected"
    page.click("#bulk-acknowledge")
    for alert_id in bulk_ids:
        page.wait_for_selector(f"tr[data-alert-id='{alert_id}'][data-status='acknowledged']")
        stored = api_get(base_url, key, f"/api/v1/alerts/{alert_id}").json()
        assert stored["alert"]["status"] == "acknowledged"
    assert page.text_content("#selected-count") == "0 selected"

    # An incident from another open alert.
    chosen = page.locator("#alert-table tbody tr[data-status='open']").first
    chosen_id = chosen.get_attribute("data-alert-id")
    assert chosen_id != acknowledged_id
    chosen.locator("input[type='checkbox']").check()
    page.click("#create-incident")
    page.fill("#incident-title", "Browser test: joint response")
    page.click("#incident-submit")
    detail = page.wait_for_selector("#incident-detail")
    incident_id = detail.get_attribute("data-incident-id")
    incident = api_get(base_url, key, f"/api/v1/incidents/{incident_id}").json()
    assert incident["title"] == "Browser test: joint response"
    assert incident["alert_ids"] == [chosen_id]
    assert (
        page.locator(
            f"#incident-board [data-status='new'] [data-incident-id='{incident_id}']"
        ).count()
        == 1
    )

    # Move it to triage and comment; both land on the incident's timeline.
    page.select_option("#incident-status-form select", "triage")
    page.click("#incident-status-form button[type='submit']")
    page.wait_for_selector(
        f"#incident-board [data-status='triage'] [data-incident-id='{incident_id}']"
    )
    page.fill("#incident-comment-form textarea", "blocked at the border firewall")
    page.click("#incident-comment-form button[type='submit']")
    page.wait_for_selector("#incident-timeline li[data-kind='comment']")
    incident = api_get(base_url, key, f"/api/v1/incidents/{incident_id}").json()
    assert incident["status"] == "triage"
    assert [e["text"] for e in incident["timeline"] if e["kind"] == "comment"] == [
        "blocked at the border firewall"
    ]
    page.screenshot(path=str(ARTIFACTS / "dashboard-incident.png"), full_page=True)

    # 中文: every static label and the views switch.
    page.click("[data-language='zh']")
    assert page.text_content("#tabs a[data-view='alerts']") == "告警队列"
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.text_content("#incident-board [data-status='triage'] h2") == "研判"
    page.click("#tabs a[data-view='overview']")
    page.wait_for_selector("#overview-view[data-loaded='true']")
    assert page.locator(".kpi-label", has_text="告警总数").count() == 1
    for chart in CHARTS:
        assert page.locator(f"#chart-{chart} canvas").first.evaluate(PAINTED_PIXELS) > 1000
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # A revoked key sends the page back to the login form (revoked through the server's own
    # principal store, whose cache of verified keys is cleared by the revocation).
    assert served["app"].state.services.principals.revoke_key(key.split("_")[1])
    page.click("#overview-refresh")
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.text_content("#login-error") == "密钥已失效，请重新登录。"
    assert page.evaluate("sessionStorage.length") == 0
    assert page.is_hidden("#error"), "a 401 is explained on the login form, not in the banner"

    assert not problems, problems
    # Only the wrong and the revoked key were refused (and the situation API probed, when absent).
    situation_absent = situation.status_code == 404
    unexpected = [
        (status, url)
        for status, url in failed
        if status != 401
        and not (situation_absent and url.startswith(f"{base_url}/api/v1/situation?"))
    ]
    assert not unexpected, unexpected
    assert sum(1 for status, _ in failed if status == 401) >= 2
    foreign = [url for url in requested if not url.startswith(f"{base_url}/")]
    assert not foreign, f"the page asked for other origins: {foreign}"
    assert any(url.endswith("/app.js") for url in requested)
