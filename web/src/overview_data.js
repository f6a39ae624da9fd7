// The overview's data model, built from the API's answers by pure functions (unit-tested in
// web/test/overview_data.test.mjs). Two sources give the same model: GET /api/v1/situation
// when the server has it, otherwise the alerts, events and incidents endpoints.
//
// Model:
// {
//   source: "situation" | "alerts",
//   buckets: [iso, ...],                      // time axis
//   eventSeries: {sector: [n per bucket]} | null (null: no event volume over time),
//   alertSeries: {sector: [n per bucket]},
//   bySector: [{name, events, alerts}], byDepartment: [{name, events, alerts}],
//   severity: {low, medium, high, critical},
//   heatmap: {tactics: [...], techniques: [...], cells: [{tactic, technique, techniqueName?, count}]},
//   topAssets: [{name, label?, count}], topSources: [{name, label?, count}],
//   threatLevels: [{sector, level (1-5), names: {zh, en}, score}] | null,
//   collection: [{name, events, lastSeen, status: "ok" | "stale"}] | null,
//   errors: [{section, reason}],             // parts the server could not compute
//   totals: {events, eventsExact, alerts, openAlerts, severeAlerts, openIncidents,
//            overdueIncidents, overdueTasks, intelReceived, intelShared},
// }

export const SEVERITIES = ["low", "medium", "high", "critical"];
export const UNKNOWN_SECTOR = "unknown";
const HOUR = 3600 * 1000;

/** The bucket width for a range: hourly up to two days, 3-hourly up to ten, else daily. */
export function bucketMillis(startMs, endMs) {
  const span = endMs - startMs;
  if (span <= 48 * HOUR) return HOUR;
  if (span <= 240 * HOUR) return 3 * HOUR;
  return 24 * HOUR;
}

/** Bucket start times (ms, aligned to the width in UTC) covering [start, end). */
export function bucketStarts(startMs, endMs, width) {
  const starts = [];
  for (let at = Math.floor(startMs / width) * width; at < endMs; at += width) starts.push(at);
  return starts;
}

/** Entity types that name the attacker's side rather than the victim's. */
const SOURCE_ENTITY_TYPES = new Set(["source.ip", "source.address", "client.ip", "threat.indicator.ip"]);

function sectorOf(alert, sectorsByDepartment) {
  const department = alert.organization?.id;
  return alert.labels?.sector || sectorsByDepartment[department] || UNKNOWN_SECTOR;
}

function asList(value) {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

function top(counter, limit = 10) {
  return [...counter.entries()]
    .sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])))
    .slice(0, limit)
    .map(([name, count]) => ({ name, count }));
}

function bump(counter, key, by = 1) {
  counter.set(key, (counter.get(key) || 0) + by);
}

/**
 * Tactic × technique cells from alerts: every technique of an alert counts under every tactic
 * of that alert (the stored alert keeps the two lists apart).
 */
export function heatmapFromAlerts(alerts) {
  const cells = new Map();
  for (const alert of alerts) {
    const tactics = asList(alert.threat?.tactic?.name);
    const techniques = asList(alert.threat?.technique?.id);
    for (const tactic of tactics) {
      for (const technique of techniques) bump(cells, `${tactic}\u0000${technique}`);
    }
  }
  return heatmapFromCells(
    [...cells.entries()].map(([key, count]) => {
      const [tactic, technique] = key.split("\u0000");
      return { tactic, technique, count };
    }),
  );
}

/** Sorted axes (by total, largest first) for a list of {tactic, technique, count} cells. */
export function heatmapFromCells(cells) {
  const tacticTotals = new Map();
  const techniqueTotals = new Map();
  for (const cell of cells) {
    bump(tacticTotals, cell.tactic, cell.count);
    bump(techniqueTotals, cell.technique, cell.count);
  }
  const order = (totals) =>
    [...totals.entries()].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0]))).map(([k]) => k);
  return { tactics: order(tacticTotals), techniques: order(techniqueTotals), cells };
}

/**
 * The model from the alerts, events and incidents endpoints.
 * alertsPage: GET /api/v1/alerts (alerts, total, counts); openAlerts: its total with
 * status=open; eventTotals: {department: {total, exact}} and `all`; incidents: the open ones.
 */
export function overviewFromFallback({
  startMs,
  endMs,
  alertsPage,
  openAlerts,
  eventTotals,
  incidents,
  sectorsByDepartment = {},
}) {
  const sectors = { ...sectorsByDepartment };
  for (const alert of alertsPage.alerts || []) {
    const department = alert.organization?.id;
    if (department && alert.labels?.sector) sectors[department] ??= alert.labels.sector;
  }
  const width = bucketMillis(startMs, endMs);
  const starts = bucketStarts(startMs, endMs, width);
  const first = starts[0] ?? startMs;
  const alerts = alertsPage.alerts || [];
  const counts = alertsPage.counts || {};

  const alertSeries = {};
  const alertsBySector = new Map();
  const assets = new Map();
  const sources = new Map();
  for (const alert of alerts) {
    const sector = sectorOf(alert, sectors);
    bump(alertsBySector, sector);
    const seen = Date.parse(alert.alert?.first_seen || alert["@timestamp"]);
    const index = Math.floor((seen - first) / width);
    if (Number.isFinite(index) && index >= 0 && index < starts.length) {
      alertSeries[sector] = alertSeries[sector] || new Array(starts.length).fill(0);
      alertSeries[sector][index] += 1;
    }
    const entity = alert.alert?.entity || {};
    const weight = alert.alert?.count || 1;
    if (SOURCE_ENTITY_TYPES.has(entity.type)) bump(sources, entity.value, weight);
    else if (entity.value) bump(assets, entity.value, weight);
    const fields = entity.fields || {};
    for (const [field, value] of Object.entries(fields)) {
      if (value === entity.value) continue;
      if (field.startsWith("source.")) bump(sources, value, weight);
      else if (field.startsWith("destination.") || field.startsWith("host.")) bump(assets, value, weight);
    }
  }

  const departments = new Set([
    ...Object.keys(counts.department || {}),
    ...Object.keys(eventTotals.departments || {}),
  ]);
  const byDepartment = [...departments].sort().map((name) => ({
    name,
    events: eventTotals.departments?.[name]?.total ?? 0,
    alerts: counts.department?.[name] ?? 0,
  }));
  const eventsBySector = new Map();
  for (const row of byDepartment) {
    if (row.events) bump(eventsBySector, sectors[row.name] || UNKNOWN_SECTOR, row.events);
  }
  const sectorNames = new Set([...alertsBySector.keys(), ...eventsBySector.keys()]);
  const bySector = [...sectorNames].sort().map((name) => ({
    name,
    events: eventsBySector.get(name) || 0,
    alerts: alertsBySector.get(name) || 0,
  }));

  const severity = Object.fromEntries(SEVERITIES.map((s) => [s, counts.severity?.[s] ?? 0]));
  const openIncidents = incidents || [];
  return {
    source: "alerts",
    buckets: starts.map((at) => new Date(at).toISOString()),
    eventSeries: null,
    alertSeries,
    bySector,
    byDepartment,
    severity,
    heatmap: heatmapFromAlerts(alerts),
    topAssets: top(assets),
    topSources: top(sources),
    threatLevels: null,
    collection: null,
    errors: [],
    totals: {
      events: eventTotals.all?.total ?? 0,
      eventsExact: eventTotals.all?.exact ?? true,
      alerts: alertsPage.total ?? alerts.length,
      openAlerts: openAlerts ?? counts.status?.open ?? 0,
      severeAlerts: (counts.severity?.high ?? 0) + (counts.severity?.critical ?? 0),
      openIncidents: openIncidents.length,
      overdueIncidents: openIncidents.filter(
        (i) => i.sla_state?.acknowledge_overdue || i.sla_state?.resolve_overdue,
      ).length,
      overdueTasks: openIncidents.reduce((n, i) => n + (i.sla_state?.overdue_tasks?.length ?? 0), 0),
      intelReceived: null,
      intelShared: null,
    },
  };
}
