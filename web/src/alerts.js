// The alert queue: filters, triage actions per alert and in bulk, the alert's details and
// evidence, and a joint incident made from the selected alerts.
import { el, replace, select } from "./dom.js";
import { formatCount, formatTime } from "./format.js";
import { label, t } from "./i18n.js";

const STATUS_FILTERS = {
  active: ["open", "acknowledged"],
  open: ["open"],
  acknowledged: ["acknowledged"],
  closed: ["closed"],
  all: [],
};
const SEVERITY_FILTERS = {
  all: [],
  severe: ["high", "critical"],
  critical: ["critical"],
  high: ["high"],
  medium: ["medium"],
  low: ["low"],
};
const PAGE_SIZE = 100;

/** The PATCH body of a named triage action. */
export function triageChange(action) {
  switch (action) {
    case "acknowledge":
      return { status: "acknowledged" };
    case "close-tp":
      return { status: "closed", resolution: "true_positive" };
    case "close-fp":
      return { status: "closed", resolution: "false_positive" };
    case "reopen":
      return { status: "open" };
    default:
      throw new Error(`unknown triage action ${action}`);
  }
}

/** The actions offered for an alert in this status. */
export function actionsFor(status) {
  if (status === "closed") return ["reopen"];
  if (status === "acknowledged") return ["close-tp", "close-fp"];
  return ["acknowledge", "close-tp", "close-fp"];
}

const ACTION_LABELS = {
  acknowledge: "alerts.acknowledge",
  "close-tp": "alerts.closeTP",
  "close-fp": "alerts.closeFP",
  reopen: "alerts.reopen",
};

function severityBadge(severity) {
  return el("span", { class: ["badge", `sev-${severity}`] }, label("severity", severity));
}

function statusBadge(alert) {
  const status = alert.alert?.status;
  const resolution = alert.alert?.resolution;
  return el(
    "span",
    { class: ["status", `status-${status}`] },
    label("alertStatus", status),
    resolution ? ` · ${label("resolution", resolution)}` : "",
  );
}

function techniques(alert) {
  const ids = [alert.threat?.technique?.id || []].flat();
  return ids.join(", ");
}

/** The alert queue view. */
export function createAlertQueue(root, app) {
  const state = {
    status: "active",
    severity: "all",
    alerts: [],
    total: 0,
    nextCursor: null,
    selected: new Set(),
    detail: null, // {alert, evidence|null}
    creating: false,
    notice: null,
  };

  async function load({ more = false } = {}) {
    const params = {
      status: STATUS_FILTERS[state.status],
      severity: SEVERITY_FILTERS[state.severity],
      size: PAGE_SIZE,
      cursor: more ? state.nextCursor : undefined,
    };
    try {
      const page = await app.api.get("/api/v1/alerts", params);
      state.alerts = more ? [...state.alerts, ...page.alerts] : page.alerts;
      state.total = page.total;
      state.nextCursor = page.next_cursor;
      const visible = new Set(state.alerts.map((a) => a.alert.id));
      for (const id of state.selected) if (!visible.has(id)) state.selected.delete(id);
      app.clearError();
    } catch (error) {
      app.showError(error);
    }
    render();
  }

  function replaceAlert(updated) {
    state.alerts = state.alerts.map((a) => (a.alert.id === updated.alert.id ? updated : a));
    if (state.detail?.alert.alert.id === updated.alert.id) state.detail = { ...state.detail, alert: updated };
  }

  async function change(alertId, body) {
    try {
      replaceAlert(await app.api.patch(`/api/v1/alerts/${encodeURIComponent(alertId)}`, body));
      app.clearError();
    } catch (error) {
      app.showError(error);
    }
    render();
  }

  async function bulkAcknowledge() {
    const ids = [...state.selected];
    if (!ids.length) return;
    try {
      const result = await app.api.post("/api/v1/alerts/bulk", { ids, status: "acknowledged" });
      state.notice = t("alerts.bulkDone", { n: result.updated });
      state.selected.clear();
      await load();
      return;
    } catch (error) {
      app.showError(error);
    }
    render();
  }

  async function openDetail(alert) {
    state.detail = { alert, evidence: null };
    render();
    try {
      const evidence = await app.api.get(`/api/v1/alerts/${encodeURIComponent(alert.alert.id)}/evidence`, {
        size: 100,
      });
      if (state.detail?.alert.alert.id === alert.alert.id) state.detail = { ...state.detail, evidence: evidence.events };
    } catch (error) {
      app.showError(error);
    }
    render();
  }

  async function createIncident(form) {
    const data = new FormData(form);
    const body = {
      title: String(data.get("title") || "").trim(),
      description: String(data.get("description") || ""),
      alert_ids: [...state.selected],
    };
    if (data.get("severity")) body.severity = data.get("severity");
    if (data.get("lead")) body.lead = data.get("lead");
    try {
      const incident = await app.api.post("/api/v1/incidents", body);
      state.creating = false;
      state.selected.clear();
      app.clearError();
      app.go("incidents", { open: incident.id });
    } catch (error) {
      app.showError(error);
      render();
    }
  }

  function toolbar() {
    return el(
      "div",
      { class: "toolbar" },
      el("label", { for: "alert-status" }, t("alerts.status")),
      select(
        Object.keys(STATUS_FILTERS).map((name) => [name, name === "all" ? t("common.all") : label("alertStatus", name)]),
        state.status,
        {
          id: "alert-status",
          onchange: (event) => {
            state.status = event.target.value;
            load();
          },
        },
      ),
      el("label", { for: "alert-severity" }, t("alerts.severity")),
      select(
        Object.keys(SEVERITY_FILTERS).map((name) => [
          name,
          name === "all" ? t("common.all") : name === "severe" ? t("alerts.severeOnly") : label("severity", name),
        ]),
        state.severity,
        {
          id: "alert-severity",
          onchange: (event) => {
            state.severity = event.target.value;
            load();
          },
        },
      ),
      el("button", { type: "button", class: "secondary", onclick: () => load() }, t("common.refresh")),
      el("span", { class: "muted", id: "alert-total" }, t("alerts.total", { n: formatCount(state.total) })),
    );
  }

  function bulkBar() {
    const count = state.selected.size;
    return el(
      "div",
      { class: ["bulk-bar", count ? "" : "idle"] },
      el("span", { id: "selected-count" }, t("alerts.selected", { n: count })),
      el(
        "button",
        { type: "button", id: "bulk-acknowledge", disabled: !count, onclick: () => bulkAcknowledge() },
        t("alerts.bulkAcknowledge"),
      ),
      el(
        "button",
        {
          type: "button",
          id: "create-incident",
          disabled: !count,
          onclick: () => {
            state.creating = true;
            render();
          },
        },
        t("alerts.createIncident"),
      ),
      state.notice ? el("span", { class: "notice" }, state.notice) : null,
    );
  }

  function row(alert) {
    const details = alert.alert;
    const id = details.id;
    const checkbox = el("input", {
      type: "checkbox",
      "aria-label": id,
      checked: state.selected.has(id),
      onchange: (event) => {
        if (event.target.checked) state.selected.add(id);
        else state.selected.delete(id);
        state.notice = null;
        render();
      },
    });
    return el(
      "tr",
      {
        dataset: { alertId: id, status: details.status },
        class: state.detail?.alert.alert.id === id ? "current" : "",
      },
      el("td", {}, checkbox),
      el("td", {}, severityBadge(details.severity)),
      el("td", {}, statusBadge(alert)),
      el(
        "td",
        {},
        el("button", { type: "button", class: "link", dataset: { action: "details" }, onclick: () => openDetail(alert) }, alert.rule?.name || alert.rule?.id),
      ),
      el("td", { class: "mono" }, `${details.entity?.type || ""} ${details.entity?.value || ""}`),
      el("td", {}, alert.organization?.name || alert.organization?.id || "–"),
      el("td", { class: "mono" }, techniques(alert)),
      el("td", { class: "num" }, formatCount(details.count)),
      el("td", {}, formatTime(details.last_seen)),
      el("td", {}, details.assignee || "–"),
      el(
        "td",
        { class: "actions" },
        actionsFor(details.status).map((action) =>
          el(
            "button",
            { type: "button", class: ["small", action], dataset: { action }, onclick: () => change(id, triageChange(action)) },
            t(ACTION_LABELS[action]),
          ),
        ),
      ),
    );
  }

  function table() {
    if (!state.alerts.length) return el("p", { class: "muted empty" }, t("alerts.empty"));
    const allSelected = state.alerts.every((a) => state.selected.has(a.alert.id));
    const selectAll = el("input", {
      type: "checkbox",
      "aria-label": t("alerts.selectAll"),
      checked: allSelected,
      onchange: (event) => {
        for (const alert of state.alerts) {
          if (event.target.checked) state.selected.add(alert.alert.id);
          else state.selected.delete(alert.alert.id);
        }
        render();
      },
    });
    return el(
      "table",
      { class: "table", id: "alert-table" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", {}, selectAll),
          [
            "alerts.severity",
            "alerts.status",
            "alerts.rule",
            "alerts.entity",
            "alerts.department",
            "alerts.techniques",
            "alerts.count",
            "alerts.lastSeen",
            "alerts.assignee",
            "alerts.actions",
          ].map((key) => el("th", {}, t(key))),
        ),
      ),
      el("tbody", {}, state.alerts.map(row)),
    );
  }

  function detailPanel() {
    if (!state.detail) return null;
    const alert = state.detail.alert;
    const details = alert.alert;
    const facts = [
      ["alerts.severity", severityBadge(details.severity)],
      ["alerts.status", statusBadge(alert)],
      ["alerts.entity", `${details.entity?.type || ""} = ${details.entity?.value || ""}`],
      ["alerts.department", alert.organization?.name || alert.organization?.id || "–"],
      ["alerts.firstSeen", formatTime(details.first_seen)],
      ["alerts.lastSeen", formatTime(details.last_seen)],
      ["alerts.count", formatCount(details.count)],
      [
        "alerts.techniques",
        [alert.threat?.technique?.id || []]
          .flat()
          .map((id, i) => `${id} ${[alert.threat?.technique?.name || []].flat()[i] || ""}`.trim())
          .join("; ") || "–",
      ],
      ["alerts.assignee", details.assignee || "–"],
    ];
    const assignForm = el(
      "form",
      {
        class: "inline-form",
        id: "assign-form",
        onsubmit: (event) => {
          event.preventDefault();
          const value = new FormData(event.target).get("assignee");
          change(details.id, { assignee: String(value || "").trim() });
        },
      },
      el("input", { name: "assignee", value: details.assignee || "", "aria-label": t("alerts.assignee"), placeholder: t("alerts.assignee") }),
      el("button", { type: "submit", class: "small" }, t("alerts.assign")),
    );
    const commentForm = el(
      "form",
      {
        class: "inline-form",
        id: "alert-comment-form",
        onsubmit: (event) => {
          event.preventDefault();
          const value = String(new FormData(event.target).get("comment") || "").trim();
          if (value) change(details.id, { comment: value });
        },
      },
      el("input", { name: "comment", "aria-label": t("alerts.comment"), placeholder: t("alerts.comment"), maxlength: 4000 }),
      el("button", { type: "submit", class: "small" }, t("alerts.addComment")),
    );
    const history = (details.history || [])
      .slice()
      .reverse()
      .map((entry) =>
        el(
          "li",
          {},
          el("span", { class: "muted" }, `${formatTime(entry.at)} · ${entry.by} · `),
          entry.status ? `${label("alertStatus", entry.status.from)} → ${label("alertStatus", entry.status.to)} ` : "",
          entry.assignee ? `${t("alerts.assignee")}: ${entry.assignee.to || "–"} ` : "",
          entry.comment ? `“${entry.comment}”` : "",
        ),
      );
    const evidence = state.detail.evidence;
    const evidenceBlock =
      evidence === null
        ? el("p", { class: "muted" }, t("common.loading"))
        : evidence.length
          ? el(
              "table",
              { class: "table compact", id: "evidence-table" },
              el(
                "thead",
                {},
                el(
                  "tr",
                  {},
                  ["evidence.time", "evidence.action", "evidence.source", "evidence.destination", "evidence.message"].map((k) =>
                    el("th", {}, t(k)),
                  ),
                ),
              ),
              el(
                "tbody",
                {},
                evidence.map((event) =>
                  el(
                    "tr",
                    {},
                    el("td", {}, formatTime(event["@timestamp"])),
                    el("td", {}, event.event?.action || event.event?.category || "–"),
                    el("td", { class: "mono" }, [event.source?.ip, event.source?.port].filter(Boolean).join(":") || "–"),
                    el("td", { class: "mono" }, [event.destination?.ip, event.destination?.port].filter(Boolean).join(":") || "–"),
                    el("td", { class: "message" }, event.message || ""),
                  ),
                ),
              ),
            )
          : el("p", { class: "muted" }, t("alerts.noEvidence"));
    return el(
      "aside",
      { class: "panel", id: "alert-detail" },
      el(
        "header",
        { class: "card-head" },
        el("h2", {}, alert.rule?.name || alert.rule?.id),
        el(
          "button",
          {
            type: "button",
            class: "link",
            onclick: () => {
              state.detail = null;
              render();
            },
          },
          t("common.close"),
        ),
      ),
      el("dl", { class: "facts" }, facts.map(([key, value]) => [el("dt", {}, t(key)), el("dd", {}, value)])),
      el("h3", {}, t("alerts.explanation")),
      el("p", { class: "explanation" }, details.explanation || "–"),
      el(
        "div",
        { class: "actions" },
        actionsFor(details.status).map((action) =>
          el(
            "button",
            { type: "button", class: ["small", action], onclick: () => change(details.id, triageChange(action)) },
            t(ACTION_LABELS[action]),
          ),
        ),
      ),
      assignForm,
      commentForm,
      el("h3", {}, t("alerts.history")),
      history.length ? el("ul", { class: "history" }, history) : el("p", { class: "muted" }, t("incident.empty")),
      el("h3", {}, t("alerts.evidence")),
      evidenceBlock,
    );
  }

  function incidentForm() {
    if (!state.creating) return null;
    const chosen = state.alerts.filter((a) => state.selected.has(a.alert.id));
    const first = chosen[0];
    const suggested = first ? `${first.rule?.name || first.rule?.id} · ${first.alert.entity?.value || ""}` : "";
    const departments = [...new Set(chosen.map((a) => a.organization?.id).filter(Boolean))];
    return el(
      "form",
      {
        class: "card incident-form",
        id: "incident-form",
        onsubmit: (event) => {
          event.preventDefault();
          createIncident(event.target);
        },
      },
      el("h2", {}, t("incident.createHeading", { n: chosen.length })),
      el("label", { for: "incident-title" }, t("incident.title")),
      el("input", { id: "incident-title", name: "title", required: true, maxlength: 300, value: suggested }),
      el("label", { for: "incident-severity" }, t("incident.severity")),
      select(
        [["", t("incident.severityAuto")], ...["low", "medium", "high", "critical"].map((s) => [s, label("severity", s)])],
        "",
        { id: "incident-severity", name: "severity" },
      ),
      el("label", { for: "incident-lead" }, t("incident.lead")),
      select([["", t("incident.leadAuto")], ...departments.map((d) => [d, d])], "", { id: "incident-lead", name: "lead" }),
      el("label", { for: "incident-description" }, t("incident.description")),
      el("textarea", { id: "incident-description", name: "description", rows: 3, maxlength: 10000 }),
      el(
        "div",
        { class: "form-actions" },
        el("button", { type: "submit", id: "incident-submit" }, t("incident.create")),
        el(
          "button",
          {
            type: "button",
            class: "secondary",
            onclick: () => {
              state.creating = false;
              render();
            },
          },
          t("common.cancel"),
        ),
      ),
    );
  }

  function render() {
    replace(
      root,
      toolbar(),
      bulkBar(),
      incidentForm(),
      el(
        "div",
        { class: ["split", state.detail ? "with-panel" : ""] },
        el(
          "div",
          { class: "card table-card" },
          table(),
          state.nextCursor
            ? el("button", { type: "button", class: "secondary more", onclick: () => load({ more: true }) }, t("common.more"))
            : null,
        ),
        detailPanel(),
      ),
    );
  }

  return {
    show: () => {
      state.notice = null;
      render();
      return load();
    },
    hide: () => {},
    relabel: () => render(),
  };
}
