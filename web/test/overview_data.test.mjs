// The overview model from the alerts/events/incidents endpoints (the fallback source).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  bucketMillis,
  bucketStarts,
  heatmapFromAlerts,
  overviewFromFallback,
} from "../src/overview_data.js";

const HOUR = 3600 * 1000;
const START = Date.parse("2026-11-28T00:00:00Z");
const END = START + 24 * HOUR;

function alert({ sector, department, firstSeen, severity = "high", entity, tactics = [], techniques = [], count = 1 }) {
  return {
    "@timestamp": firstSeen,
    organization: { id: department },
    labels: sector ? { sector } : undefined,
    threat: { tactic: { name: tactics }, technique: { id: techniques } },
    alert: { first_seen: firstSeen, severity, entity, count, status: "open" },
  };
}

test("bucket width grows with the range", () => {
  assert.equal(bucketMillis(START, START + 24 * HOUR), HOUR);
  assert.equal(bucketMillis(START, START + 7 * 24 * HOUR), 3 * HOUR);
  assert.equal(bucketMillis(START, START + 30 * 24 * HOUR), 24 * HOUR);
  const starts = bucketStarts(START + 90 * 60 * 1000, START + 4 * HOUR, HOUR);
  assert.deepEqual(starts, [START + HOUR, START + 2 * HOUR, START + 3 * HOUR]);
});

test("heat map counts every technique under every tactic of an alert", () => {
  const heatmap = heatmapFromAlerts([
    alert({ firstSeen: "2026-11-28T01:00:00Z", tactics: ["Credential Access"], techniques: ["T1110", "T1110.001"] }),
    alert({ firstSeen: "2026-11-28T01:00:00Z", tactics: ["Credential Access", "Initial Access"], techniques: ["T1110"] }),
    alert({ firstSeen: "2026-11-28T01:00:00Z" }), // no ATT&CK mapping: no cell
  ]);
  const cell = (tactic, technique) =>
    heatmap.cells.find((c) => c.tactic === tactic && c.technique === technique)?.count;
  assert.equal(cell("Credential Access", "T1110"), 2);
  assert.equal(cell("Credential Access", "T1110.001"), 1);
  assert.equal(cell("Initial Access", "T1110"), 1);
  assert.equal(heatmap.cells.length, 3);
  assert.deepEqual(heatmap.tactics, ["Credential Access", "Initial Access"]); // largest first
  assert.equal(heatmap.techniques[0], "T1110");
});

test("fallback model: series by sector, breakdowns, top lists and totals", () => {
  const alerts = [
    alert({
      sector: "government", department: "gov-cloud", firstSeen: "2026-11-28T02:10:00Z",
      entity: { type: "source.ip", value: "203.0.113.77" }, count: 40,
    }),
    alert({
      department: "energy", firstSeen: "2026-11-28T02:50:00Z",
      entity: { type: "destination.ip", value: "10.30.1.11", fields: { "source.ip": "198.51.100.23", "destination.ip": "10.30.1.11" } },
      count: 900,
    }),
    alert({ sector: "finance", department: "finance", firstSeen: "2026-11-27T20:00:00Z", entity: { type: "user.name", value: "x" } }),
  ];
  const model = overviewFromFallback({
    startMs: START,
    endMs: END,
    alertsPage: {
      alerts,
      total: 3,
      counts: {
        severity: { high: 2, critical: 1 },
        status: { open: 3 },
        department: { "gov-cloud": 1, energy: 1, finance: 1 },
      },
    },
    openAlerts: 3,
    eventTotals: {
      all: { total: 10000, exact: false },
      departments: { "gov-cloud": { total: 700, exact: true }, energy: { total: 2000, exact: true } },
    },
    incidents: [
      { sla_state: { overdue: true, acknowledge_overdue: true, resolve_overdue: false, overdue_tasks: ["t1", "t2"] } },
      { sla_state: { overdue: false, acknowledge_overdue: false, resolve_overdue: false, overdue_tasks: [] } },
    ],
    sectorsByDepartment: { energy: "energy", "gov-cloud": "government" },
  });
  assert.equal(model.source, "alerts");
  assert.equal(model.buckets.length, 24);
  assert.equal(model.eventSeries, null);
  assert.equal(model.alertSeries.government[2], 1);
  assert.equal(model.alertSeries.energy[2], 1);
  assert.equal(model.alertSeries.finance, undefined, "an alert before the range is not on the time axis");
  assert.deepEqual(
    model.bySector.map((r) => [r.name, r.events, r.alerts]),
    [["energy", 2000, 1], ["finance", 0, 1], ["government", 700, 1]],
  );
  assert.deepEqual(model.byDepartment.find((r) => r.name === "finance"), { name: "finance", events: 0, alerts: 1 });
  assert.deepEqual(model.topSources.map((r) => [r.name, r.count]), [["198.51.100.23", 900], ["203.0.113.77", 40]]);
  assert.deepEqual(model.topAssets.map((r) => r.name), ["10.30.1.11", "x"]);
  assert.deepEqual(model.severity, { low: 0, medium: 0, high: 2, critical: 1 });
  assert.equal(model.totals.events, 10000);
  assert.equal(model.totals.eventsExact, false);
  assert.equal(model.totals.severeAlerts, 3);
  assert.equal(model.totals.openIncidents, 2);
  assert.equal(model.totals.overdueIncidents, 1);
  assert.equal(model.totals.overdueTasks, 2);
});

test("fallback model with nothing in it is empty, not broken", () => {
  const model = overviewFromFallback({
    startMs: START,
    endMs: END,
    alertsPage: { alerts: [], total: 0, counts: {} },
    openAlerts: 0,
    eventTotals: { all: { total: 0, exact: true }, departments: {} },
    incidents: [],
  });
  assert.deepEqual(model.alertSeries, {});
  assert.deepEqual(model.bySector, []);
  assert.deepEqual(model.heatmap.cells, []);
  assert.deepEqual(model.topAssets, []);
  assert.equal(model.totals.alerts, 0);
});
