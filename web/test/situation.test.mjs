// GET /api/v1/situation answers -> the overview model.
import assert from "node:assert/strict";
import { test } from "node:test";
import { overviewFromSituation, seriesBy } from "../src/situation.js";

const T0 = "2026-11-28T00:00:00.000Z";
const T1 = "2026-11-28T01:00:00.000Z";

const SITUATION = {
  range: { start: T0, end: "2026-11-28T02:00:00.000Z", interval: "1h", interval_seconds: 3600, timezone: "UTC" },
  events: {
    total: 120,
    by_sector: { energy: 100, finance: 20 },
    by_department: { energy: 100, finance: 20 },
    over_time: [
      { time: T0, count: 70, by_sector: { energy: 60, finance: 10 }, by_department: {} },
      { time: T1, count: 50, by_sector: { energy: 40, finance: 10 }, by_department: {} },
    ],
  },
  alerts: {
    total: 3,
    open: 2,
    by_severity: { critical: 1, medium: 2 },
    by_sector: { energy: 3 },
    by_department: { energy: 3 },
    new_over_time: [{ time: T1, count: 3, by_sector: { energy: 3 }, by_department: {} }],
  },
  attack: {
    heatmap: [
      { tactic_id: "TA0007", tactic_name: "Discovery", technique_id: "T1046", technique_name: "Network Service Discovery", alerts: 2 },
    ],
  },
  top_attacked_assets: [
    { asset: "10.30.1.11", kind: "ip", name: "scada-hmi-01", criticality: "critical", hostile_events: 900 },
    { asset: "10.30.1.12", kind: "ip", name: null, criticality: null, hostile_events: 0 },
  ],
  top_attacking_sources: [
    { source: "198.51.100.23", alerts: 1, hostile_events: 900 },
    { source: "185.220.101.9", alerts: 2, hostile_events: 0 },
  ],
  incidents: { open: 4, acknowledge_overdue: 1, resolve_overdue: 1, overdue_tasks: 3 },
  intelligence: { received: 5, shared: 7 },
  collection: {
    sources: [
      { dataset: "flow", department: "energy", events: 100, latest_ingested: T1, silent: false },
      { dataset: "dns", department: "finance", events: 0, latest_ingested: null, silent: true },
    ],
  },
  threat_levels: [{ sector: "energy", level: 4, name_zh: "高", name_en: "High", score: 40.5 }],
  errors: [{ section: "intelligence", reason: "index missing" }],
};

test("series are aligned on the union of bucket times", () => {
  const times = [T0, T1];
  assert.deepEqual(seriesBy(SITUATION.alerts.new_over_time, times, "by_sector"), { energy: [0, 3] });
  assert.deepEqual(seriesBy([{ time: "2030-01-01T00:00:00Z", by_sector: { x: 1 } }], times, "by_sector"), {});
});

test("a full situation answer becomes the overview model", () => {
  const model = overviewFromSituation(SITUATION);
  assert.equal(model.source, "situation");
  assert.deepEqual(model.buckets, [T0, T1]);
  assert.deepEqual(model.eventSeries, { energy: [60, 40], finance: [10, 10] });
  assert.deepEqual(model.alertSeries, { energy: [0, 3] });
  assert.deepEqual(model.bySector, [
    { name: "energy", events: 100, alerts: 3 },
    { name: "finance", events: 20, alerts: 0 },
  ]);
  assert.deepEqual(model.severity, { low: 0, medium: 2, high: 0, critical: 1 });
  assert.deepEqual(model.heatmap.cells, [
    { tactic: "Discovery", technique: "T1046", techniqueName: "Network Service Discovery", count: 2 },
  ]);
  assert.equal(model.topAssets[0].label, "scada-hmi-01 (10.30.1.11)");
  assert.equal(model.topAssets[1].label, "10.30.1.12");
  assert.deepEqual(model.topSources.map((s) => s.count), [900, 2]);
  assert.deepEqual(model.threatLevels, [{ sector: "energy", level: 4, names: { zh: "高", en: "High" }, score: 40.5 }]);
  assert.deepEqual(model.collection.map((c) => c.status), ["ok", "stale"]);
  assert.equal(model.totals.overdueIncidents, 2);
  assert.equal(model.totals.overdueTasks, 3);
  assert.equal(model.totals.intelShared, 7);
  assert.equal(model.errors.length, 1);
});

test("missing sections give empty parts", () => {
  const model = overviewFromSituation({});
  assert.deepEqual(model.buckets, []);
  assert.deepEqual(model.bySector, []);
  assert.deepEqual(model.heatmap, { tactics: [], techniques: [], cells: [] });
  assert.deepEqual(model.threatLevels, []);
  assert.equal(model.totals.events, 0);
  assert.equal(model.totals.intelReceived, null);
});
