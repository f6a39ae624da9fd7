// GET /api/v1/situation (api/routes/situation.py, model `Situation` in lianfang/situation.py)
// -> the overview model (see overview_data.js for the model's shape).
import { heatmapFromCells, SEVERITIES } from "./overview_data.js";

/** {sector: [count per bucket]} from VolumeBucket lists, aligned on `times`. */
export function seriesBy(buckets, times, key) {
  const position = new Map(times.map((time, index) => [time, index]));
  const series = {};
  for (const bucket of buckets || []) {
    const index = position.get(bucket.time);
    if (index === undefined) continue;
    for (const [name, count] of Object.entries(bucket[key] || {})) {
      series[name] = series[name] || new Array(times.length).fill(0);
      series[name][index] += count;
    }
  }
  return series;
}

function rows(events = {}, alerts = {}) {
  const names = [...new Set([...Object.keys(events), ...Object.keys(alerts)])].sort();
  return names.map((name) => ({ name, events: events[name] ?? 0, alerts: alerts[name] ?? 0 }));
}

/** The overview model from a `Situation` answer. */
export function overviewFromSituation(situation) {
  const events = situation.events || {};
  const alerts = situation.alerts || {};
  const incidents = situation.incidents || {};
  const intelligence = situation.intelligence || null;
  const times = [
    ...new Set([...(events.over_time || []), ...(alerts.new_over_time || [])].map((b) => b.time)),
  ].sort((a, b) => Date.parse(a) - Date.parse(b));
  const heatmap = heatmapFromCells(
    (situation.attack?.heatmap || []).map((cell) => ({
      tactic: cell.tactic_name || cell.tactic_id,
      technique: cell.technique_id,
      techniqueName: cell.technique_name,
      count: cell.alerts,
    })),
  );
  const severity = Object.fromEntries(SEVERITIES.map((s) => [s, alerts.by_severity?.[s] ?? 0]));
  return {
    source: "situation",
    buckets: times,
    eventSeries: seriesBy(events.over_time, times, "by_sector"),
    alertSeries: seriesBy(alerts.new_over_time, times, "by_sector"),
    bySector: rows(events.by_sector, alerts.by_sector),
    byDepartment: rows(events.by_department, alerts.by_department),
    severity,
    heatmap,
    topAssets: (situation.top_attacked_assets || []).map((asset) => ({
      name: asset.asset,
      label: asset.name && asset.name !== asset.asset ? `${asset.name} (${asset.asset})` : asset.asset,
      count: asset.hostile_events,
      critical: asset.criticality === "critical",
    })),
    topSources: (situation.top_attacking_sources || []).map((source) => ({
      name: source.source,
      label: source.alerts ? `${source.source} (${source.alerts} ⚑)` : source.source,
      // a source known only from alerts (e.g. exfiltration) still gets a bar
      count: source.hostile_events || source.alerts,
    })),
    threatLevels: (situation.threat_levels || []).map((threat) => ({
      sector: threat.sector,
      level: threat.level,
      names: { zh: threat.name_zh, en: threat.name_en },
      score: threat.score,
    })),
    collection: (situation.collection?.sources || []).map((source) => ({
      name: `${source.department} · ${source.dataset}`,
      events: source.events,
      lastSeen: source.latest_ingested,
      status: source.silent ? "stale" : "ok",
    })),
    errors: situation.errors || [],
    totals: {
      events: events.total ?? 0,
      eventsExact: true,
      alerts: alerts.total ?? 0,
      openAlerts: alerts.open ?? 0,
      severeAlerts: (alerts.by_severity?.high ?? 0) + (alerts.by_severity?.critical ?? 0),
      openIncidents: incidents.open ?? 0,
      overdueIncidents: (incidents.acknowledge_overdue ?? 0) + (incidents.resolve_overdue ?? 0),
      overdueTasks: incidents.overdue_tasks ?? 0,
      intelReceived: intelligence ? intelligence.received : null,
      intelShared: intelligence ? intelligence.shared : null,
    },
  };
}
