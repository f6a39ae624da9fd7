// The incident board: one column per lifecycle status; an incident opens with its SLA,
// tasks, timeline, comments and status changes.
import { el, replace, select } from "./dom.js";
import { formatTime, localInputToIso } from "./format.js";
import { label, t } from "./i18n.js";

export const INCIDENT_STATUSES = ["new", "triage", "containment", "eradication", "recovery", "closed"];
const SEVERITIES = ["low", "medium", "high", "critical"];

/** Incidents grouped by status, in lifecycle order (unknown statuses are dropped). */
export function boardColumns(incidents) {
  const columns = Object.fromEntries(INCIDENT_STATUSES.map((status) => [status, []]));
  for (const incident of incidents) columns[incident.status]?.push(incident);
  return columns;
}

/** One line of an incident's timeline in the current language. */
export function timelineText(entry) {
  const values = { ...entry };
  if (entry.kind === "status") {
    values.from = label("incidentStatus", entry.from);
    values.to = label("incidentStatus", entry.to);
  } else if (entry.kind === "severity") {
    values.from = label("severity", entry.from);
    values.to = label("severity", entry.to);
  } else if (entry.kind === "participants") {
    values.added = (entry.added || []).join(", ");
  } else if (entry.kind === "task_update") {
    const parts = [entry.task];
    if (entry.status) parts.push(`${entry.status.from} → ${entry.status.to}`);
    if (entry.owner) parts.push(`${entry.owner.from || "–"} → ${entry.owner.to || "–"}`);
    values.task = parts.join(" ");
  }
  const key = `timeline.${entry.kind}`;
  const text = t(key, values);
  return text === key ? entry.kind : text;
}

/** The incident board view; `show({open})` opens one incident. */
export function createIncidentBoard(root, app) {
  const state = { incidents: [], showClosed: false, detail: null };

  async function load() {
    try {
      const params = { size: 200 };
      if (!state.showClosed) params.open_only = true;
      const page = await app.api.get("/api/v1/incidents", params);
      state.incidents = page.incidents;
      app.clearError();
    } catch (error) {
      app.showError(error);
    }
    render();
  }

  async function open(incidentId) {
    try {
      state.detail = await app.api.get(`/api/v1/incidents/${encodeURIComponent(incidentId)}`);
      app.clearError();
    } catch (error) {
      app.showError(error);
    }
    render();
  }

  function merge(incident) {
    state.detail = incident;
    const known = state.incidents.some((i) => i.id === incident.id);
    state.incidents = known
      ? state.incidents.map((i) => (i.id === incident.id ? incident : i))
      : [incident, ...state.incidents];
  }

  async function act(request) {
    try {
      const answer = await request();
      merge(answer.incident && answer.task ? answer.incident : answer);
      app.clearError();
    } catch (error) {
      app.showError(error);
    }
    render();
  }

  const path = (id, suffix = "") => `/api/v1/incidents/${encodeURIComponent(id)}${suffix}`;

  function card(incident) {
    return el(
      "button",
      {
        type: "button",
        class: ["incident-card", `sev-border-${incident.severity}`, state.detail?.id === incident.id ? "current" : ""],
        dataset: { incidentId: incident.id },
        onclick: () => open(incident.id),
      },
      el("div", { class: "incident-title" }, incident.title),
      el(
        "div",
        { class: "incident-meta" },
        el("span", { class: ["badge", `sev-${incident.severity}`] }, label("severity", incident.severity)),
        el("span", {}, incident.lead),
        el("span", { class: "muted" }, `${(incident.alert_ids || []).length} ⚑`),
        incident.sla_state?.overdue ? el("span", { class: "badge overdue" }, t("incident.overdue")) : null,
      ),
    );
  }

  function board() {
    const columns = boardColumns(state.incidents);
    const shown = state.showClosed ? INCIDENT_STATUSES : INCIDENT_STATUSES.filter((s) => s !== "closed");
    return el(
      "div",
      { class: "board", id: "incident-board" },
      shown.map((status) =>
        el(
          "section",
          { class: "column", dataset: { status } },
          el("header", {}, el("h2", {}, label("incidentStatus", status)), el("span", { class: "count" }, String(columns[status].length))),
          columns[status].map(card),
        ),
      ),
    );
  }

  function detailPanel() {
    const incident = state.detail;
    if (!incident) return null;
    const departments = [incident.lead, ...(incident.participants || [])];
    const sla = incident.sla || {};
    const slaState = incident.sla_state || {};
    const statusForm = el(
      "form",
      {
        class: "inline-form",
        id: "incident-status-form",
        onsubmit: (event) => {
          event.preventDefault();
          const status = new FormData(event.target).get("status");
          act(() => app.api.patch(path(incident.id), { status }));
        },
      },
      select(
        INCIDENT_STATUSES.map((s) => [s, label("incidentStatus", s)]),
        incident.status,
        { name: "status", "aria-label": t("incident.status") },
      ),
      el("button", { type: "submit", class: "small" }, t("incident.changeStatus")),
    );
    const severityForm = el(
      "form",
      {
        class: "inline-form",
        onsubmit: (event) => {
          event.preventDefault();
          const severity = new FormData(event.target).get("severity");
          act(() => app.api.patch(path(incident.id), { severity }));
        },
      },
      select(
        SEVERITIES.map((s) => [s, label("severity", s)]),
        incident.severity,
        { name: "severity", "aria-label": t("incident.severity") },
      ),
      el("button", { type: "submit", class: "small secondary" }, t("incident.escalate")),
    );
    const tasks = (incident.tasks || []).map((task) =>
      el(
        "li",
        {
          class: [
            "task",
            task.status === "done" ? "done" : "",
            (slaState.overdue_tasks || []).includes(task.id) ? "overdue" : "",
          ],
          dataset: { taskId: task.id },
        },
        el("span", { class: "task-title" }, task.title),
        el("span", { class: "muted" }, ` · ${task.department}${task.owner ? ` · ${task.owner}` : ""}${task.due ? ` · ${formatTime(task.due)}` : ""}`),
        el(
          "button",
          {
            type: "button",
            class: "small secondary",
            onclick: () =>
              act(() =>
                app.api.patch(path(incident.id, `/tasks/${encodeURIComponent(task.id)}`), {
                  status: task.status === "done" ? "open" : "done",
                }),
              ),
          },
          t(task.status === "done" ? "incident.taskReopen" : "incident.taskDone"),
        ),
      ),
    );
    const taskForm = el(
      "form",
      {
        class: "stack-form",
        id: "task-form",
        onsubmit: (event) => {
          event.preventDefault();
          const data = new FormData(event.target);
          const body = {
            title: String(data.get("title") || "").trim(),
            department: data.get("department"),
          };
          if (data.get("owner")) body.owner = String(data.get("owner")).trim();
          const due = localInputToIso(data.get("due"));
          if (due) body.due = due;
          act(() => app.api.post(path(incident.id, "/tasks"), body));
        },
      },
      el("input", { name: "title", required: true, maxlength: 500, placeholder: t("incident.taskTitle"), "aria-label": t("incident.taskTitle") }),
      select(
        departments.map((d) => [d, d]),
        departments[0],
        { name: "department", "aria-label": t("incident.taskDepartment") },
      ),
      el("input", { name: "owner", maxlength: 200, placeholder: t("incident.taskOwner"), "aria-label": t("incident.taskOwner") }),
      el("input", { name: "due", type: "datetime-local", "aria-label": t("incident.taskDue") }),
      el("button", { type: "submit", class: "small" }, t("incident.addTask")),
    );
    const commentForm = el(
      "form",
      {
        class: "stack-form",
        id: "incident-comment-form",
        onsubmit: (event) => {
          event.preventDefault();
          const text = String(new FormData(event.target).get("text") || "").trim();
          if (text) act(() => app.api.post(path(incident.id, "/comments"), { text }));
        },
      },
      el("textarea", { name: "text", rows: 2, maxlength: 10000, required: true, placeholder: t("incident.comment"), "aria-label": t("incident.comment") }),
      el("button", { type: "submit", class: "small" }, t("incident.addComment")),
    );
    const timeline = (incident.timeline || [])
      .slice()
      .reverse()
      .map((entry) =>
        el(
          "li",
          { dataset: { kind: entry.kind } },
          el("span", { class: "muted" }, `${formatTime(entry.at)} · ${entry.by} · `),
          timelineText(entry),
        ),
      );
    return el(
      "aside",
      { class: "panel", id: "incident-detail", dataset: { incidentId: incident.id } },
      el(
        "header",
        { class: "card-head" },
        el("h2", {}, incident.title),
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
      incident.description ? el("p", { class: "explanation" }, incident.description) : null,
      el(
        "dl",
        { class: "facts" },
        [
          ["incident.status", el("span", { id: "incident-status" }, label("incidentStatus", incident.status))],
          ["incident.severity", el("span", { class: ["badge", `sev-${incident.severity}`] }, label("severity", incident.severity))],
          ["incident.lead", incident.lead],
          ["incident.participants", (incident.participants || []).join(", ") || "–"],
          ["incident.alerts", String((incident.alert_ids || []).length)],
          ["incident.createdBy", `${incident.created_by} · ${formatTime(incident.created_at)}`],
          [
            "incident.acknowledgeBy",
            el("span", { class: slaState.acknowledge_overdue ? "danger" : "" }, formatTime(sla.acknowledge_by)),
          ],
          ["incident.resolveBy", el("span", { class: slaState.resolve_overdue ? "danger" : "" }, formatTime(sla.resolve_by))],
        ].map(([key, value]) => [el("dt", {}, t(key)), el("dd", {}, value)]),
      ),
      statusForm,
      severityForm,
      el("h3", {}, t("incident.tasks")),
      tasks.length ? el("ul", { class: "tasks" }, tasks) : el("p", { class: "muted" }, t("incident.noTasks")),
      taskForm,
      el("h3", {}, t("incident.comment")),
      commentForm,
      el("h3", {}, t("incident.timeline")),
      el("ol", { class: "timeline", id: "incident-timeline" }, timeline),
    );
  }

  function render() {
    replace(
      root,
      el(
        "div",
        { class: "toolbar" },
        el(
          "label",
          { class: "check" },
          el("input", {
            type: "checkbox",
            checked: state.showClosed,
            onchange: (event) => {
              state.showClosed = event.target.checked;
              load();
            },
          }),
          t("incident.showClosed"),
        ),
        el("button", { type: "button", class: "secondary", onclick: () => load() }, t("common.refresh")),
      ),
      el("div", { class: ["split", state.detail ? "with-panel" : ""] }, board(), detailPanel()),
    );
  }

  return {
    show: async (params = {}) => {
      render();
      await load();
      if (params.open) await open(params.open);
    },
    hide: () => {},
    relabel: () => render(),
  };
}
