// The dashboard's entry point: login with an API key, the language switch, and the three
// views (overview, alert queue, incident board) behind hash routes.
import { createAlertQueue } from "./alerts.js";
import { ApiClient, ApiError, forgetKey, storedKey, storeKey } from "./api.js";
import { createIncidentBoard } from "./incidents.js";
import {
  applyStaticLabels,
  initialLanguage,
  onLanguageChange,
  savedLanguage,
  setLanguage,
  t,
} from "./i18n.js";
import { createOverview } from "./overview.js";

const VIEWS = ["overview", "alerts", "incidents"];

function byId(id) {
  return document.getElementById(id);
}

/** A readable one-line description of a failed call. */
export function describeError(error) {
  if (error instanceof ApiError) {
    if (error.status === 0) return `${t("common.network")}: ${error.message}`;
    return `${t("common.error")} ${error.status} (${error.code}): ${error.message}`;
  }
  return `${t("common.error")}: ${error?.message || error}`;
}

function start() {
  let current = null;
  let lastError = null;

  const app = {
    api: new ApiClient({ onUnauthorized: () => logout("login.expired") }),
    showError(error) {
      // a 401 has already sent the page back to the login form, which says why
      if (error instanceof ApiError && error.status === 401) return;
      lastError = error;
      byId("error-text").textContent = describeError(error);
      byId("error").hidden = false;
    },
    clearError() {
      lastError = null;
      byId("error").hidden = true;
    },
    go(view, params = {}) {
      show(view, params);
    },
  };

  const views = {
    overview: createOverview(byId("overview-view"), app),
    alerts: createAlertQueue(byId("alerts-view"), app),
    incidents: createIncidentBoard(byId("incidents-view"), app),
  };

  function show(view, params = {}) {
    if (!VIEWS.includes(view)) view = "overview";
    if (current && current !== view) views[current].hide();
    current = view;
    if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
    for (const name of VIEWS) byId(`${name}-view`).hidden = name !== view;
    for (const link of document.querySelectorAll("#tabs [data-view]")) {
      link.classList.toggle("active", link.dataset.view === view);
    }
    views[view].show(params);
  }

  function setLoggedIn(loggedIn) {
    byId("login-view").hidden = loggedIn;
    byId("tabs").hidden = !loggedIn;
    byId("logout").hidden = !loggedIn;
    byId("who").hidden = !loggedIn;
    if (!loggedIn) for (const name of VIEWS) byId(`${name}-view`).hidden = true;
  }

  function logout(reasonKey) {
    forgetKey();
    app.api.key = null;
    if (current) views[current].hide();
    current = null;
    app.clearError();
    setLoggedIn(false);
    const message = byId("login-error");
    message.hidden = !reasonKey;
    message.dataset.i18n = reasonKey || "";
    message.textContent = reasonKey ? t(reasonKey) : "";
    if (!reasonKey) delete message.dataset.i18n;
    byId("api-key").value = "";
    byId("api-key").focus();
  }

  function enter(key) {
    app.api.key = key;
    byId("who").textContent = `${t("login.as")} ${key.split("_")[1] || ""}`;
    byId("who").dataset.keyId = key.split("_")[1] || "";
    setLoggedIn(true);
    show(location.hash.slice(1));
  }

  byId("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = byId("api-key").value.trim();
    if (!key) return;
    const probe = new ApiClient({ key });
    const message = byId("login-error");
    try {
      await probe.get("/api/v1/alerts", { size: 1 });
    } catch (error) {
      const reason =
        error.status === 401 ? "login.invalid" : error.status === 403 ? "login.forbidden" : null;
      message.hidden = false;
      if (reason) message.dataset.i18n = reason;
      else delete message.dataset.i18n;
      message.textContent = reason ? t(reason) : describeError(error);
      return;
    }
    message.hidden = true;
    storeKey(key);
    enter(key);
  });

  byId("logout").addEventListener("click", () => logout(null));
  byId("error-close").addEventListener("click", () => app.clearError());
  for (const button of document.querySelectorAll("[data-language]")) {
    button.addEventListener("click", () => setLanguage(button.dataset.language));
  }
  window.addEventListener("hashchange", () => {
    if (app.api.key) show(location.hash.slice(1));
  });
  onLanguageChange(() => {
    const who = byId("who");
    if (who.dataset.keyId) who.textContent = `${t("login.as")} ${who.dataset.keyId}`;
    if (lastError) byId("error-text").textContent = describeError(lastError);
    if (current) views[current].relabel();
  });

  setLanguage(initialLanguage(savedLanguage(), navigator.languages));
  applyStaticLabels();
  const key = storedKey();
  if (key) enter(key);
  else logout(null);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
