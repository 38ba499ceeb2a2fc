"use strict";
// The dashboard: polls the daemon's state every second and follows one service's
// logs over server-sent events. No framework: the page is small.

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  const { dataset, ...rest } = props;
  Object.assign(node, rest);
  Object.assign(node.dataset, dataset ?? {});
  for (const child of children) node.append(child);
  return node;
};

const STATE_CLASS = { healthy: "ok", running: "ok", completed: "", waiting: "", stopped: "",
  restarting: "warn", unhealthy: "warn", exited: "bad", failed: "bad" };

let following = null; // { project, service, source }
let follow = true;

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response.json();
}

async function act(project, service, verb) {
  try {
    await api(`/api/projects/${encodeURIComponent(project)}/services/${encodeURIComponent(service)}/${verb}`,
      { method: "POST" });
  } catch (err) {
    alert(`${verb} ${service}: ${err.message}`);
  }
  refresh();
}

function serviceRow(project, s) {
  const state = s.state.state;
  const badge = el("span", { className: `badge ${STATE_CLASS[state] ?? ""}`, textContent: state });
  const stateCell = el("td", {}, badge);
  if (s.state.detail) stateCell.append(el("div", { className: "why", textContent: s.state.detail }));
  const port = s.port
    ? el("a", { href: `http://127.0.0.1:${s.port}/`, textContent: String(s.port), target: "_blank", rel: "noopener" })
    : "";
  const buttons = el("td", { className: "actions" });
  for (const verb of ["restart", "stop", "start"]) {
    buttons.append(el("button", { type: "button", textContent: verb,
      onclick: () => act(project, s.name, verb), dataset: { verb, service: s.name } }), " ");
  }
  buttons.append(el("button", { type: "button", textContent: "logs",
    onclick: () => showLogs(project, s.name), dataset: { verb: "logs", service: s.name } }));
  const row = el("tr", {},
    el("td", { textContent: s.name }), stateCell,
    el("td", { textContent: s.pid ?? "" }), el("td", {}, port),
    el("td", { textContent: String(s.restarts) }), buttons);
  row.dataset.service = s.name;
  row.dataset.pid = s.pid ?? "";
  row.dataset.state = state;
  return row;
}

function renderProjects(projects) {
  const root = $("#projects");
  root.replaceChildren();
  $("#no-projects").hidden = projects.length > 0;
  for (const p of projects) {
    const table = el("table", {},
      el("thead", {}, el("tr", {}, ...["Service", "State", "PID", "Port", "Restarts", ""].map((h) => el("th", { textContent: h })))),
      el("tbody", {}, ...p.services.map((s) => serviceRow(p.name, s))));
    root.append(el("div", { className: "project", id: `project-${p.name}` },
      el("h3", { textContent: p.name }, " ", el("span", { className: "muted", textContent: p.file ?? "" })), table));
  }
}

function renderTable(selector, rows) {
  const body = $(`${selector} tbody`);
  if (rows.length === 0) {
    const columns = $(`${selector} thead tr`).children.length;
    body.replaceChildren(el("tr", {}, el("td", { className: "muted", colSpan: columns, textContent: "none" })));
    return;
  }
  body.replaceChildren(...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", { textContent: c })))));
}

function size(bytes) {
  if (bytes == null) return "";
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1000 && i < units.length - 1) { bytes /= 1000; i++; }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function refresh() {
  try {
    const state = await api("/api/state");
    $("#daemon").textContent = `v${state.daemon.version} · ${state.daemon.platform} · pid ${state.daemon.pid}`;
    renderProjects(state.projects);
    renderTable("#containers", state.containers.map((c) => [c.name, c.image, c.state, c.command, c.id.slice(0, 12)]));
    renderTable("#images", state.images.map((i) => [i.reference, size(i.size), i.id.slice(0, 19)]));
    $("#live").className = "badge ok";
    $("#live").textContent = "live";
  } catch (err) {
    $("#live").className = "badge bad";
    $("#live").textContent = "disconnected";
  }
}

function appendLine(line) {
  const search = $("#logs-search").value;
  const span = el("span", { textContent: line.line + "\n", className: line.stream === "stderr" ? "err" : "" });
  span.hidden = search !== "" && !line.line.includes(search);
  const logs = $("#logs");
  logs.append(span);
  while (logs.childNodes.length > 5000) logs.firstChild.remove();
  if (follow) logs.scrollTop = logs.scrollHeight;
}

function showLogs(project, service) {
  if (following) following.source.close();
  $("#logs").replaceChildren();
  $("#logs-section").hidden = false;
  $("#logs-title").textContent = `${project} / ${service}`;
  const source = new EventSource(`/api/projects/${encodeURIComponent(project)}/services/${encodeURIComponent(service)}/logs`);
  source.addEventListener("line", (event) => appendLine(JSON.parse(event.data)));
  following = { project, service, source };
}

$("#logs-search").addEventListener("input", () => {
  const search = $("#logs-search").value;
  for (const span of $("#logs").children) span.hidden = search !== "" && !span.textContent.includes(search);
});
$("#logs-follow").addEventListener("click", () => {
  follow = !follow;
  $("#logs-follow").setAttribute("aria-pressed", String(follow));
  $("#logs-follow").textContent = follow ? "Following" : "Paused";
});
$("#logs-close").addEventListener("click", () => {
  if (following) following.source.close();
  following = null;
  $("#logs-section").hidden = true;
});

refresh();
setInterval(refresh, 1000);
