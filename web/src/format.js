// Numbers and times for display in the current language.
import { language } from "./i18n.js";

function locale() {
  return language() === "zh" ? "zh-CN" : "en-GB";
}

/** A count with the language's digit grouping ("–" when absent; "+" when a lower bound). */
export function formatCount(value, exact = true) {
  if (value === null || value === undefined) return "–";
  const text = Number(value).toLocaleString(locale());
  return exact ? text : `${text}+`;
}

/** An ISO timestamp as local date and time ("–" when absent or unreadable). */
export function formatTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toLocaleString(locale(), {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  });
}

/** A datetime-local input's value (local time, no zone) as an ISO timestamp with zone. */
export function localInputToIso(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}
