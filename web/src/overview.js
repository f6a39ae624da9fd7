// The situation overview: key figures, threat level per sector, and the charts.
import { breakdownOption, createChart, heatmapOption, severityOption, timeSeriesOption, topOption } from "./charts.js";
import { el, replace, select } from "./dom.js";
import { formatCount, formatTime } from "./format.js";
import { label, language, t } from "./i18n.js";
import { overviewFromFallback } from "./overview_data.js";
import { overviewFromSituation } from "./situation.js";

const RANGES = { "24h": 24, "7d": 24 * 7, "30d": 24 * 30 };
const HOUR = 3600 * 1000;
// The overview refreshes itself while it is on screen.
const REFRESH_MS = 60 * 1000;

/** [start, end) in ms: `hours` back from the end of the current hour. */
export function rangeBounds(name, now = Date.now()) {
  const end = Math.ceil(now / HOUR) * HOUR;
  return { startMs: end - RANGES[name] * HOUR, endMs: end };
}

async function loadFallback(api, startMs, endMs) {
  const start = new Date(startMs).toISOString();
  const end = new Date(endMs).toISOString();
  const [alertsPage, openPage, incidentsPage, allEvents] = await Promise.all([
    api.get("/api/v1/alerts", { start, end, size: 500 }),
    api.get("/api/v1/alerts", { start, end, size: 1, status: "open" }),
    api.get("/api/v1/incidents", { open_only: true, size: 200 }),
    api.get("/api/v1/events", { start, end, size: 1 }),
  ]);
  const departments = Object.keys(alertsPage.counts?.department || {});
  const pages = await Promise.all(
    departments.map((department) =>
      api.get("/api/v1/events", { start, end, size: 1, filter: `organization.id:${department}` }),
    ),
  );
  const sectorsByDepartment = {};
  const totals = {};
  departments.forEach((department, index) => {
    const page = pages[index];
    totals[department] = { total: page.total, exact: page.total_is_exact };
    const sector = page.events[0]?.labels?.sector;
    if (sector) sectorsByDepartment[department] = sector;
  });
  return overviewFromFallback({
    startMs,
    endMs,
    alertsPage,
    openAlerts: openPage.total,
    eventTotals: {
      all: { total: allEvents.total, exact: allEvents.total_is_exact },
      departments: totals,
    },
    incidents: incidentsPage.incidents,
    sectorsByDepartment,
  });
}

/** The overview model from the situation API, or from the older endpoints when it is absent. */
export async function loadOverview(api, startMs, endMs) {
  try {
    const situation = await api.get("/api/v1/situation", {
      start: new Date(startMs).toISOString(),
      end: new Date(endMs).toISOString(),
    });
    return overviewFromSituation(situation);
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  return loadFallback(api, startMs, endMs);
}

/** The overview view: `show()` loads and draws, `relabel()` redraws in the current language. */
export function createOverview(root, app) {
  let rangeName = "7d";
  let breakdown = "sector";
  let model = null;
  let loading = false;
  let timer = null;
  const charts = new Map();
  const resizer = new ResizeObserver(() => {
    for (const chart of charts.values()) chart.resize();
  });

  function card(id, titleKey, extraClass, ...controls) {
    const body = el("div", { class: "chart", id: `chart-${id}`, dataset: { chart: id } });
    return el(
      "section",
      { class: ["card", "chart-card", extraClass] },
      el("header", { class: "card-head" }, el("h2", {}, t(titleKey)), ...controls),
      body,
    );
  }

  function i18n() {
    return { t, label, language: language() };
  }

  function draw(id, option) {
    const node = root.querySelector(`#chart-${id}`);
    if (!node) return;
    let chart = charts.get(id);
    if (!chart || chart.getDom() !== node) {
      chart?.dispose();
      chart = createChart(node);
      charts.set(id, chart);
      resizer.observe(node);
    }
    chart.setOption(option, { notMerge: true });
  }

  function disposeCharts() {
    for (const chart of charts.values()) chart.dispose();
    charts.clear();
    resizer.disconnect();
  }

  function kpi(key, value, tone) {
    return el(
      "div",
      { class: ["kpi", tone], dataset: { kpi: key.replace("overview.", "") } },
      el("div", { class: "kpi-value" }, value),
      el("div", { class: "kpi-label" }, t(key)),
    );
  }

  function render() {
    disposeCharts();
    const rangeSelect = select(
      Object.keys(RANGES).map((name) => [name, t(`range.${name}`)]),
      rangeName,
      {
        id: "overview-range",
        "aria-label": t("range.label"),
        onchange: (event) => {
          rangeName = event.target.value;
          load();
        },
      },
    );
    const toolbar = el(
      "div",
      { class: "toolbar" },
      el("label", { for: "overview-range" }, t("range.label")),
      rangeSelect,
      el("button", { type: "button", class: "secondary", id: "overview-refresh", onclick: () => load() }, t("common.refresh")),
      el(
        "span",
        { class: "muted source-note" },
        loading ? t("common.loading") : model ? t(`overview.source.${model.source}`) : "",
      ),
    );
    if (!model) {
      root.dataset.loaded = "false";
      replace(root, toolbar, el("p", { class: "muted" }, t("common.loading")));
      return;
    }
    const totals = model.totals;
    const kpis = el(
      "div",
      { class: "kpis" },
      kpi("overview.events", formatCount(totals.events, totals.eventsExact)),
      kpi("overview.alerts", formatCount(totals.alerts)),
      kpi("overview.openAlerts", formatCount(totals.openAlerts), totals.openAlerts ? "warn" : ""),
      kpi("overview.severeAlerts", formatCount(totals.severeAlerts), totals.severeAlerts ? "danger" : ""),
      kpi("overview.openIncidents", formatCount(totals.openIncidents)),
      kpi(
        "overview.overdue",
        `${formatCount(totals.overdueIncidents)} / ${formatCount(totals.overdueTasks)}`,
        totals.overdueIncidents || totals.overdueTasks ? "danger" : "",
      ),
      totals.intelReceived !== null && totals.intelReceived !== undefined
        ? kpi("overview.intel", `${formatCount(totals.intelReceived)} / ${formatCount(totals.intelShared)}`)
        : null,
    );
    const levels = model.threatLevels?.length
      ? el(
          "section",
          { class: "card threat-levels", id: "threat-levels" },
          el("header", { class: "card-head" }, el("h2", {}, t("overview.threatLevel"))),
          el(
            "div",
            { class: "levels" },
            model.threatLevels.map((row) =>
              el(
                "div",
                { class: ["level", `level-${row.level}`], dataset: { sector: row.sector, level: row.level } },
                el("span", { class: "level-sector" }, label("sector", row.sector)),
                el("span", { class: "level-value" }, `${row.level} · ${row.names[language()] || row.level}`),
              ),
            ),
          ),
        )
      : null;
    const breakdownToggle = el(
      "div",
      { class: "segmented" },
      ["sector", "department"].map((name) =>
        el(
          "button",
          {
            type: "button",
            class: breakdown === name ? "active" : "",
            onclick: () => {
              breakdown = name;
              render();
            },
          },
          t(name === "sector" ? "overview.bySectorTab" : "overview.byDepartmentTab"),
        ),
      ),
    );
    const collection = model.collection?.length
      ? el(
          "section",
          { class: "card", id: "collection-health" },
          el("header", { class: "card-head" }, el("h2", {}, t("overview.collection"))),
          el(
            "table",
            { class: "table compact" },
            el(
              "tbody",
              {},
              model.collection.map((row) =>
                el(
                  "tr",
                  {},
                  el("td", {}, row.label || row.name),
                  el("td", { class: "num" }, formatCount(row.events)),
                  el("td", {}, formatTime(row.lastSeen)),
                  el("td", { class: row.status === "ok" ? "ok" : "danger" }, t(row.status === "ok" ? "overview.collectionOk" : "overview.collectionStale")),
                ),
              ),
            ),
          ),
        )
      : null;
    const problems = model.errors?.length
      ? el(
          "p",
          { class: "warning", id: "overview-errors" },
          `${t("overview.partial")}: `,
          model.errors.map((e) => `${e.section} (${e.reason})`).join("; "),
        )
      : null;
    replace(
      root,
      toolbar,
      problems,
      kpis,
      levels,
      el(
        "div",
        { class: "chart-grid" },
        card(
          "timeseries",
          "overview.timeSeries",
          "wide",
          model.eventSeries ? null : el("span", { class: "muted small" }, t("overview.noEventSeries")),
        ),
        card("breakdown", "overview.bySector", "", breakdownToggle),
        card("severity", "overview.severity", ""),
        card("heatmap", "overview.heatmap", "wide tall"),
        card("assets", "overview.topAssets", ""),
        card("sources", "overview.topSources", ""),
        collection,
      ),
    );
    const labels = i18n();
    draw("timeseries", timeSeriesOption(model, labels));
    draw("breakdown", breakdownOption(breakdown === "sector" ? model.bySector : model.byDepartment, labels, breakdown));
    draw("severity", severityOption(model.severity, labels));
    draw("heatmap", heatmapOption(model.heatmap, labels));
    draw("assets", topOption(model.topAssets, labels, "#36cfc9"));
    draw("sources", topOption(model.topSources, labels, "#e8684a"));
    root.dataset.loaded = String(!loading);
  }

  // Each load has a number; only the latest one's answer is shown (a range change or a
  // refresh while loading supersedes it, leaving the view discards it).
  let generation = 0;

  async function load() {
    const mine = ++generation;
    loading = true;
    render();
    const { startMs, endMs } = rangeBounds(rangeName);
    try {
      const next = await loadOverview(app.api, startMs, endMs);
      if (mine !== generation) return;
      model = next;
      app.clearError();
    } catch (error) {
      if (mine === generation) app.showError(error);
    } finally {
      if (mine === generation) {
        loading = false;
        render();
      }
    }
  }

  function stopRefreshing() {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  return {
    show: () => {
      stopRefreshing();
      timer = setInterval(load, REFRESH_MS);
      return load();
    },
    hide: () => {
      generation += 1;
      loading = false;
      stopRefreshing();
      disposeCharts();
    },
    relabel: () => render(),
  };
}
