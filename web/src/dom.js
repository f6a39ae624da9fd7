// Building DOM nodes from data. Everything shown comes from logs an attacker may control,
// so text is only ever set with textContent (never innerHTML), and no inline style
// attributes are written (the page runs under a CSP without 'unsafe-inline').

/**
 * Create an element: el("td", {class: "num", dataset: {id: "x"}, onclick: fn}, "text", child).
 * Attributes starting with "on" become listeners; `hidden`, `disabled`, `checked`, `value`
 * and `selected` are set as properties.
 */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (["hidden", "disabled", "checked", "value", "selected", "open"].includes(name)) node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

/** Append text and nodes (arrays are flattened, null/undefined/false skipped). */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace every child of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** A <select> with [value, label] options and the current value selected. */
export function select(options, current, attributes = {}) {
  return el(
    "select",
    attributes,
    options.map(([value, label]) => el("option", { value, selected: value === current }, label)),
  );
}
