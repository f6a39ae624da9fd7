// Labels in both languages, triage actions, the incident board's columns, query strings.
import assert from "node:assert/strict";
import { test } from "node:test";
import { actionsFor, triageChange } from "../src/alerts.js";
import { queryString } from "../src/api.js";
import { MESSAGES, initialLanguage, translate } from "../src/i18n.js";
import { boardColumns, INCIDENT_STATUSES } from "../src/incidents.js";

test("every label exists in Chinese and English, and none is empty", () => {
  const zh = Object.keys(MESSAGES.zh).sort();
  const en = Object.keys(MESSAGES.en).sort();
  assert.deepEqual(zh, en);
  for (const language of ["zh", "en"]) {
    for (const [key, text] of Object.entries(MESSAGES[language])) assert.ok(text.trim(), `${language} ${key}`);
  }
  for (const status of INCIDENT_STATUSES) assert.ok(`incidentStatus.${status}` in MESSAGES.zh);
});

test("placeholders are filled, unknown keys fall back to the key", () => {
  assert.equal(translate("zh", "alerts.selected", { n: 3 }), "已选 3 条");
  assert.equal(translate("en", "alerts.selected", { n: 3 }), "3 selected");
  assert.equal(translate("en", "no.such.key"), "no.such.key");
  assert.equal(translate("en", "alerts.selected"), "{n} selected");
});

test("the initial language: saved choice, else the browser's, else Chinese", () => {
  assert.equal(initialLanguage("en", ["zh-CN"]), "en");
  assert.equal(initialLanguage(null, ["en-US", "zh-CN"]), "en");
  assert.equal(initialLanguage("fr", ["de-DE"]), "zh");
  assert.equal(initialLanguage(null, []), "zh");
});

test("triage actions follow the alert's status and map to the API's changes", () => {
  assert.deepEqual(actionsFor("open"), ["acknowledge", "close-tp", "close-fp"]);
  assert.deepEqual(actionsFor("acknowledged"), ["close-tp", "close-fp"]);
  assert.deepEqual(actionsFor("closed"), ["reopen"]);
  assert.deepEqual(triageChange("close-fp"), { status: "closed", resolution: "false_positive" });
  assert.deepEqual(triageChange("acknowledge"), { status: "acknowledged" });
  assert.throws(() => triageChange("delete"), /unknown triage action/);
});

test("incidents fall into lifecycle columns; unknown statuses are dropped", () => {
  const columns = boardColumns([
    { id: "a", status: "new" },
    { id: "b", status: "triage" },
    { id: "c", status: "new" },
    { id: "d", status: "archived" },
  ]);
  assert.deepEqual(Object.keys(columns), INCIDENT_STATUSES);
  assert.deepEqual(columns.new.map((i) => i.id), ["a", "c"]);
  assert.deepEqual(columns.triage.map((i) => i.id), ["b"]);
  assert.equal(Object.values(columns).flat().length, 3);
});

test("query strings repeat arrays and leave out empty values", () => {
  assert.equal(queryString({ status: ["open", "acknowledged"], size: 5, cursor: undefined, q: "" }), "?status=open&status=acknowledged&size=5");
  assert.equal(queryString({ filter: "organization.id:gov cloud&x" }), "?filter=organization.id%3Agov+cloud%26x");
  assert.equal(queryString({}), "");
});
