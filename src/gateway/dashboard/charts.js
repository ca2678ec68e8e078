// Column charts drawn as inline SVG, no library: plain bars (AR aging) and bridges whose bars float
// from a running total to the next (deferred revenue waterfall, MRR movements). Every column
// carries its figure as a decimal string (data-amount) and a <title> with the formatted value; the
// running totals are added exactly (format.js), floats only place the bars.

import { addDecimals, negateDecimal, toNumber } from "./format.js";

const svgNamespace = "http://www.w3.org/2000/svg";
const width = 640;
const height = 260;
const margin = { top: 22, right: 12, bottom: 30, left: 12 };
// Rotated labels (many columns) need room below the axis and, for the first, to its left.
const rotatedMargin = { top: 22, right: 12, bottom: 74, left: 56 };
// Above this many columns the value labels over the bars would overlap (the titles remain) and the
// category labels below are turned 45 degrees.
const labelledColumnsMax = 8;

function svgElement(name, attributes = {}, text = null) {
  const element = document.createElementNS(svgNamespace, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

// columns: [{key, label, from, to, amount, kind, valueText}] where from/to are decimal strings
// (the bar spans them), amount the figure the column stands for, kind one of
// "total" | "increase" | "decrease" | "bar" (a CSS class).
export function drawColumns(container, columns, { caption = "" } = {}) {
  const svg = svgElement("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": caption,
    class: "chart",
  });
  const rotated = columns.length > labelledColumnsMax;
  const { top: marginTop, right: marginRight, bottom: marginBottom, left: marginLeft } = rotated
    ? rotatedMargin
    : margin;
  const values = columns.flatMap((column) => [toNumber(column.from), toNumber(column.to)]);
  const low = Math.min(0, ...values);
  const high = Math.max(0, ...values);
  const span = high - low || 1;
  const plotHeight = height - marginTop - marginBottom;
  const y = (value) => marginTop + ((high - value) / span) * plotHeight;
  const slot = (width - marginLeft - marginRight) / Math.max(columns.length, 1);
  const barWidth = Math.max(2, Math.min(56, slot * 0.7));

  svg.append(
    svgElement("line", {
      x1: marginLeft,
      x2: width - marginRight,
      y1: y(0),
      y2: y(0),
      class: "axis",
    }),
  );
  columns.forEach((column, index) => {
    const center = marginLeft + slot * (index + 0.5);
    const top = y(Math.max(toNumber(column.from), toNumber(column.to)));
    const bottom = y(Math.min(toNumber(column.from), toNumber(column.to)));
    const group = svgElement("g", {
      class: `column ${column.kind}`,
      "data-key": column.key,
      "data-amount": column.amount,
    });
    group.append(svgElement("title", {}, `${column.label}: ${column.valueText}`));
    group.append(
      svgElement("rect", {
        x: center - barWidth / 2,
        y: top,
        width: barWidth,
        height: Math.max(bottom - top, 1),
        rx: 2,
      }),
    );
    if (!rotated) {
      group.append(
        svgElement(
          "text",
          { x: center, y: Math.max(top - 5, 12), class: "value", "text-anchor": "middle" },
          column.valueText,
        ),
      );
    }
    const labelY = height - marginBottom + 16;
    const label = rotated
      ? svgElement(
          "text",
          {
            x: center,
            y: labelY,
            class: "label",
            "text-anchor": "end",
            transform: `rotate(-45 ${center} ${labelY})`,
          },
          column.label,
        )
      : svgElement(
          "text",
          { x: center, y: labelY, class: "label", "text-anchor": "middle" },
          column.label,
        );
    group.append(label);
    svg.append(group);
  });
  container.replaceChildren(svg);
  return svg;
}

// A bridge: a first total, steps that add or take away, and (optionally) a closing total.
// steps: [{key, label, amount, sign: +1|-1}], amounts as non-negative decimal strings.
// Returns the columns for drawColumns and the exact running total at the end.
export function bridgeColumns(start, steps, format) {
  const columns = [];
  let running = "0";
  if (start) {
    columns.push({
      key: start.key,
      label: start.label,
      from: "0",
      to: start.amount,
      amount: start.amount,
      kind: "total",
      valueText: format(start.amount),
    });
    running = start.amount;
  }
  for (const step of steps) {
    const signed = step.sign < 0 ? negateDecimal(step.amount) : step.amount;
    const next = addDecimals([running, signed]);
    columns.push({
      key: step.key,
      label: step.label,
      from: running,
      to: next,
      amount: step.amount,
      kind: step.sign < 0 ? "decrease" : "increase",
      valueText: `${step.sign < 0 ? "−" : "+"}${format(step.amount)}`,
    });
    running = next;
  }
  return { columns, end: running };
}
