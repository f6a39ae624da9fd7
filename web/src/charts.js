// ECharts (only the parts the overview uses, canvas renderer) and the chart options built
// from the overview model. Tooltips use ECharts' rich-text mode: drawn on the canvas, so no
// HTML with inline styles is created (the page's CSP forbids inline styles).
import * as echarts from "echarts/core";
import { BarChart, HeatmapChart, LineChart, PieChart } from "echarts/charts";
import {
  GraphicComponent,
  GridComponent,
  LegendComponent,
  TooltipComponent,
  VisualMapComponent,
} from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";
import { SEVERITIES } from "./overview_data.js";

let registered = false;

function register() {
  if (registered) return;
  echarts.use([
    BarChart,
    HeatmapChart,
    LineChart,
    PieChart,
    GraphicComponent,
    GridComponent,
    LegendComponent,
    TooltipComponent,
    VisualMapComponent,
    CanvasRenderer,
  ]);
  registered = true;
}

export const SEVERITY_COLOURS = {
  low: "#5b8ff9",
  medium: "#f6bd16",
  high: "#fa8c16",
  critical: "#e8464a",
};
const PALETTE = ["#4e9cf5", "#36cfc9", "#f6bd16", "#e8684a", "#9270ca", "#5ad8a6", "#ff9d4d", "#6dc8ec"];
const TEXT = "#c9d4e6";
const GRID_LINE = "#26324a";

/** A chart on `node` (canvas renderer, dark theme, transparent background). */
export function createChart(node) {
  register();
  return echarts.init(node, "dark", { renderer: "canvas" });
}

const base = () => ({
  backgroundColor: "transparent",
  color: PALETTE,
  textStyle: { color: TEXT },
  tooltip: { renderMode: "richText", confine: true },
  animation: false,
});

function empty(text) {
  return {
    ...base(),
    graphic: {
      type: "text",
      left: "center",
      top: "middle",
      style: { text, fill: "#7d8aa3", fontSize: 14 },
    },
  };
}

function formatBucket(iso, language) {
  const date = new Date(iso);
  return date.toLocaleString(language === "zh" ? "zh-CN" : "en-GB", {
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  });
}

/**
 * Events (lines, left axis) and alerts (stacked bars, right axis) per sector over time.
 * `i18n` is {t, label, language}.
 */
export function timeSeriesOption(model, i18n) {
  const { t, label } = i18n;
  const length = model.buckets.length;
  const sectors = [
    ...new Set([...Object.keys(model.eventSeries || {}), ...Object.keys(model.alertSeries || {})]),
  ].sort();
  if (!length || !sectors.length) return empty(t("common.none"));
  const colour = Object.fromEntries(sectors.map((s, i) => [s, PALETTE[i % PALETTE.length]]));
  const series = [];
  for (const sector of sectors) {
    if (model.eventSeries?.[sector]) {
      series.push({
        name: `${label("sector", sector)} · ${t("overview.eventsSeries")}`,
        type: "line",
        yAxisIndex: 0,
        showSymbol: false,
        lineStyle: { width: 2 },
        itemStyle: { color: colour[sector] },
        data: model.eventSeries[sector],
      });
    }
  }
  for (const sector of sectors) {
    if (model.alertSeries?.[sector]) {
      series.push({
        name: `${label("sector", sector)} · ${t("overview.alertsSeries")}`,
        type: "bar",
        stack: "alerts",
        yAxisIndex: model.eventSeries ? 1 : 0,
        itemStyle: { color: colour[sector], opacity: 0.75 },
        data: model.alertSeries[sector],
      });
    }
  }
  if (!series.length) return empty(t("common.none"));
  const yAxis = [
    {
      type: "value",
      name: model.eventSeries ? t("overview.eventsSeries") : t("overview.alertsSeries"),
      splitLine: { lineStyle: { color: GRID_LINE } },
    },
  ];
  if (model.eventSeries) {
    yAxis.push({ type: "value", name: t("overview.alertsSeries"), splitLine: { show: false } });
  }
  return {
    ...base(),
    tooltip: { ...base().tooltip, trigger: "axis" },
    legend: { type: "scroll", top: 0, textStyle: { color: TEXT } },
    grid: { left: 50, right: model.eventSeries ? 50 : 20, top: 40, bottom: 30 },
    xAxis: {
      type: "category",
      data: model.buckets.map((iso) => formatBucket(iso, i18n.language)),
      axisLabel: { hideOverlap: true },
    },
    yAxis,
    series,
  };
}

/** Events and alerts per sector or per department (grouped bars, two axes). */
export function breakdownOption(rows, { t, label }, group) {
  if (!rows.length) return empty(t("common.none"));
  const names = rows.map((row) => (group === "sector" ? label("sector", row.name) : row.label || row.name));
  return {
    ...base(),
    tooltip: { ...base().tooltip, trigger: "axis" },
    legend: { top: 0, textStyle: { color: TEXT } },
    grid: { left: 60, right: 50, top: 40, bottom: 40 },
    xAxis: { type: "category", data: names, axisLabel: { interval: 0, hideOverlap: true } },
    yAxis: [
      { type: "value", name: t("overview.eventsSeries"), splitLine: { lineStyle: { color: GRID_LINE } } },
      { type: "value", name: t("overview.alertsSeries"), splitLine: { show: false } },
    ],
    series: [
      { name: t("overview.eventsSeries"), type: "bar", data: rows.map((r) => r.events), itemStyle: { color: "#4e9cf5" } },
      {
        name: t("overview.alertsSeries"),
        type: "bar",
        yAxisIndex: 1,
        data: rows.map((r) => r.alerts),
        itemStyle: { color: "#e8684a" },
      },
    ],
  };
}

/** Alerts per severity as a donut. */
export function severityOption(severity, { t }) {
  const data = SEVERITIES.map((name) => ({
    name: t(`severity.${name}`),
    value: severity[name] || 0,
    itemStyle: { color: SEVERITY_COLOURS[name] },
  })).filter((item) => item.value > 0);
  if (!data.length) return empty(t("common.none"));
  return {
    ...base(),
    tooltip: { ...base().tooltip, trigger: "item" },
    legend: { bottom: 0, textStyle: { color: TEXT } },
    series: [
      {
        type: "pie",
        radius: ["40%", "70%"],
        center: ["50%", "45%"],
        label: { color: TEXT, formatter: "{b}: {c}" },
        data,
      },
    ],
  };
}

/** ATT&CK tactic (rows) × technique (columns) heat map. */
export function heatmapOption(heatmap, { t, label }) {
  if (!heatmap.cells.length) return empty(t("common.none"));
  const column = new Map(heatmap.techniques.map((id, i) => [id, i]));
  const row = new Map(heatmap.tactics.map((name, i) => [name, i]));
  const max = Math.max(...heatmap.cells.map((c) => c.count));
  const names = new Map(heatmap.cells.map((c) => [c.technique, c.techniqueName]));
  const tactics = heatmap.tactics.map((name) => label("tactic", name));
  return {
    ...base(),
    tooltip: {
      ...base().tooltip,
      trigger: "item",
      formatter: (item) => {
        const [x, y, count] = item.value;
        const technique = heatmap.techniques[x];
        const name = names.get(technique);
        return `${tactics[y]}\n${technique}${name ? ` ${name}` : ""}: ${count}`;
      },
    },
    grid: { left: 120, right: 20, top: 10, bottom: 90 },
    xAxis: {
      type: "category",
      data: heatmap.techniques,
      splitArea: { show: true },
      axisLabel: { rotate: 45, interval: 0 },
    },
    yAxis: {
      type: "category",
      data: tactics,
      splitArea: { show: true },
      axisLabel: { interval: 0 },
    },
    visualMap: {
      min: 0,
      max: Math.max(1, max),
      calculable: false,
      orient: "horizontal",
      left: "center",
      bottom: 0,
      itemHeight: 120,
      textStyle: { color: TEXT },
      inRange: { color: ["#1d2b45", "#f6bd16", "#e8464a"] },
    },
    series: [
      {
        name: t("overview.heatmap"),
        type: "heatmap",
        data: heatmap.cells.map((c) => [column.get(c.technique), row.get(c.tactic), c.count]),
        label: { show: true, color: "#0b1220" },
      },
    ],
  };
}

/** A top-N list as horizontal bars, largest on top (entries counted zero times are left out). */
export function topOption(rows, { t }, colour) {
  const ordered = rows.filter((r) => r.count > 0).reverse();
  if (!ordered.length) return empty(t("common.none"));
  return {
    ...base(),
    tooltip: { ...base().tooltip, trigger: "axis" },
    grid: { left: 20, right: 40, top: 10, bottom: 20, containLabel: true },
    xAxis: { type: "value", splitLine: { lineStyle: { color: GRID_LINE } } },
    yAxis: {
      type: "category",
      data: ordered.map((r) => r.label || r.name),
      axisLabel: { width: 220, overflow: "truncate" },
    },
    series: [{ type: "bar", data: ordered.map((r) => r.count), itemStyle: { color: colour } }],
  };
}
