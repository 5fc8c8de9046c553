/* NextPanel marketplace page: plain JavaScript, no build step.
 *
 * Talks to /api/v1/marketplace with the admin bearer token (kept in
 * sessionStorage). Operations start with ?wait=false (202 {operation_id}); the
 * page then polls GET operations/{id} for download bytes and stage messages
 * until the operation is done or failed, and shows the new state or the
 * one-line reason it was refused.
 */
(() => {
  "use strict";

  const API = "/api/v1/marketplace";
  const TOKEN_KEY = "nextpanel.adminToken";
  const POLL_MS = 250;

  const $ = (id) => document.getElementById(id);
  const state = {
    catalogue: null, // last GET /plugins answer
    busy: false, // an operation (ours or another admin's) is running
    view: "plugins",
    pendingUninstall: null,
  };

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, body) {
      super(oneLine(body && body.detail !== undefined ? detailText(body.detail) : `HTTP ${status}`));
      this.status = status;
      this.body = body || {};
    }
  }

  // -- helpers ----------------------------------------------------------------

  function oneLine(text) {
    return String(text).split(/\s+/).filter(Boolean).join(" ");
  }

  function detailText(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("; "); // 422
    return JSON.stringify(detail);
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  function formatPrice(price) {
    if (price === null || price === undefined || price === "") return "—";
    if (price === 0 || price === "0") return "Free";
    if (typeof price === "number") return `$${price.toFixed(2)}`;
    return String(price);
  }

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  function pluginName(id) {
    const card = state.catalogue && state.catalogue.plugins.find((p) => p.id === id);
    return card ? card.name : id;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // -- the API ----------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${token() || ""}`, Accept: "application/json" };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (exc) {
      throw new ApiError(0, { detail: `the backend did not answer (${exc.message})` });
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401 || response.status === 403) {
      const reason = data && data.detail ? detailText(data.detail) : `HTTP ${response.status}`;
      signOut(response.status === 401 ? "Please sign in: the marketplace needs the admin token." : `The admin token was refused (${reason}). Sign in again.`);
      throw new AuthError(reason);
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return { status: response.status, data };
  }

  // -- login ------------------------------------------------------------------

  function showLogin(message) {
    $("nav").hidden = true;
    $("plugins-view").hidden = true;
    $("history-view").hidden = true;
    $("status-panel").hidden = true;
    $("login-view").hidden = false;
    const notice = $("login-message");
    notice.hidden = !message;
    notice.textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message);
  }

  async function onLogin(event) {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) {
      showLogin("Enter the admin token.");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    $("login-view").hidden = true;
    $("nav").hidden = false;
    await showView(location.hash === "#history" ? "history" : "plugins");
  }

  // -- views ------------------------------------------------------------------

  async function showView(view) {
    if (view !== state.view && !state.busy) $("status-panel").hidden = true; // a finished result belongs to the view it was shown on
    state.view = view;
    $("plugins-view").hidden = view !== "plugins";
    $("history-view").hidden = view !== "history";
    for (const tab of document.querySelectorAll(".tab")) tab.setAttribute("aria-pressed", String(tab.dataset.view === view));
    if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
    try {
      if (view === "history") await loadHistory();
      else await loadPlugins();
    } catch (exc) {
      if (!(exc instanceof AuthError)) throw exc;
    }
  }

  async function loadPlugins() {
    const box = $("plugins");
    box.setAttribute("aria-busy", "true");
    let data;
    try {
      ({ data } = await api("GET", "/plugins"));
    } catch (exc) {
      if (exc instanceof AuthError) throw exc;
      $("plugins-error").hidden = false;
      $("plugins-error").textContent = `Could not load the plugins: ${exc.message}`;
      box.setAttribute("aria-busy", "false");
      return null;
    }
    state.catalogue = data;
    $("plugins-error").hidden = !data.repository_error;
    $("plugins-error").textContent = data.repository_error ? `The repository could not be read: ${data.repository_error}` : "";
    $("repository-info").textContent = data.repository
      ? `${data.plugins.length} plugins from ${data.repository}`
      : "No repository is configured: only installed plugins are listed.";
    box.replaceChildren(...data.plugins.map(renderCard));
    if (!data.plugins.length) box.append(el("p", { class: "muted", text: "The repository has no plugins." }));
    box.setAttribute("aria-busy", "false");
    applyBusy();
    return data;
  }

  function renderCard(p) {
    const installed = p.installed_version !== null;
    const badge = p.load_error
      ? el("span", { class: "badge error", text: "Load error" })
      : !installed
        ? el("span", { class: "badge available", text: "Not installed" })
        : p.enabled
          ? el("span", { class: "badge enabled", text: "Enabled" })
          : el("span", { class: "badge disabled", text: "Disabled" });
    const label = (verb) => `${verb} ${p.name}`;
    const action = (verb, kind, cls, extra = {}) =>
      el("button", { type: "button", class: cls, "aria-label": label(extra.aria || verb), dataset: { action: kind, plugin: p.id }, onclick: () => onAction(kind, p) }, verb);

    const actions = [];
    if (!installed) actions.push(action("Install", "install", "primary"));
    else if (p.update_available) actions.push(action(`Upgrade to ${p.latest_version}`, "upgrade", "primary", { aria: `Upgrade to ${p.latest_version}:` }));
    if (installed) {
      actions.push(p.enabled ? action("Disable", "disable", "secondary") : action("Enable", "enable", "secondary"));
      if (p.previous_version) actions.push(action(`Roll back to ${p.previous_version}`, "rollback", "secondary", { aria: `Roll back to ${p.previous_version}:` }));
      actions.push(action("Uninstall", "uninstall", "danger"));
    }

    const installedText = installed
      ? [p.installed_version, p.update_available ? el("span", { class: "update" }, ` · ${p.latest_version} available`) : null]
      : ["—"];
    return el(
      "article",
      { class: "card", id: `plugin-${p.id}`, "aria-labelledby": `plugin-${p.id}-name`, dataset: { plugin: p.id, installed: installed ? p.installed_version : "", enabled: String(p.enabled) } },
      el("div", { class: "card-head" }, el("div", {}, el("h2", { id: `plugin-${p.id}-name`, text: p.name }), el("span", { class: "id", text: p.id })), badge),
      el("p", { class: "description", text: p.description || "No description." }),
      el(
        "dl",
        { class: "facts" },
        el("dt", { text: "Category" }), el("dd", { text: p.category || "—" }),
        el("dt", { text: "Price" }), el("dd", { text: formatPrice(p.price) }),
        el("dt", { text: "Latest version" }), el("dd", { text: p.latest_version || "—" }),
        el("dt", { text: "Installed" }), el("dd", { class: "installed-version" }, ...installedText),
        el("dt", { text: "State" }), el("dd", { class: "enabled-state", text: !installed ? "Not installed" : p.enabled ? "Enabled" : "Disabled" }),
        el("dt", { text: "Requires" }), el("dd", { text: p.requires && p.requires.length ? p.requires.join(", ") : "Nothing" }),
      ),
      p.load_error ? el("p", { class: "notice notice-error load-error", text: `Installed but not loaded: ${p.load_error}` }) : null,
      el("div", { class: "actions" }, ...actions),
    );
  }

  function stepVersions(s) {
    if (s.from && s.to && s.from !== s.to) return `${s.from} → ${s.to}`;
    if (s.action === "uninstall") return `${s.from} (removed)`;
    if (s.action === "none") return `${s.to || s.from} (${s.enabled ? "enabled" : "disabled"})`;
    return s.to || s.from || "";
  }

  function operationText(operation, steps) {
    const actions = [...new Set(steps.map((s) => s.action).filter((a) => a && a !== "none" && a !== operation))];
    return actions.length ? `${operation} (${actions.join(", ")})` : operation;
  }

  async function loadHistory() {
    const [{ data: history }, { data: ops }] = await Promise.all([api("GET", "/history?limit=200"), api("GET", "/operations")]);
    const rows = history.history.map((entry) => {
      const steps = entry.steps || [];
      const versions = steps.map(stepVersions).join(", ");
      return el(
        "tr",
        { dataset: { txid: entry.txid } },
        el("td", { text: formatTime(entry.finished) }),
        el("td", { text: operationText(entry.operation, steps) }),
        el("td", { text: steps.map((s) => s.id).join(", ") }),
        el("td", { text: versions }),
        el("td", { class: `outcome-${entry.outcome}` }, entry.outcome === "done" ? "done" : "rolled back", entry.reason ? el("span", { class: "reason", text: entry.reason }) : null),
      );
    });
    $("history-rows").replaceChildren(...rows);
    $("history-empty").hidden = rows.length > 0;

    const refused = ops.recent.filter((op) => op.status === "failed" && op.exit_code !== 1);
    const refusalRows = refused.map((op) =>
      el(
        "tr",
        { dataset: { operation: op.id } },
        el("td", { text: formatTime(op.finished || op.started) }),
        el("td", { text: op.kind }),
        el("td", { text: op.plugin_id }),
        el("td", { class: "outcome-refused" }, op.exit_code === 75 ? "busy" : "refused", el("span", { class: "reason mono", text: oneLine(op.error || "") })),
      ),
    );
    $("refusal-rows").replaceChildren(...refusalRows);
    $("refusals-empty").hidden = refusalRows.length > 0;
  }

  // -- operations -------------------------------------------------------------

  function applyBusy() {
    for (const button of document.querySelectorAll(".actions button, #refresh")) button.disabled = state.busy;
  }

  function setBusy(busy) {
    state.busy = busy;
    applyBusy();
  }

  const VERB = { install: "Installing", upgrade: "Upgrading", uninstall: "Uninstalling", rollback: "Rolling back", enable: "Enabling", disable: "Disabling", "install-remote": "Installing" };

  function showStatus(kind, title, summary) {
    const panel = $("status-panel");
    panel.hidden = false;
    panel.className = `status ${kind}`;
    panel.dataset.state = kind;
    $("status-title").textContent = title;
    const box = $("status-summary");
    box.replaceChildren(...(Array.isArray(summary) ? summary : [summary]));
    $("status-dismiss").hidden = kind === "running";
  }

  function showProgress(op) {
    const downloads = op.downloads || [];
    // The package being downloaded (else the last one): its own bytes; "2 of 3" when several.
    let index = downloads.findIndex((d) => d.received < d.total);
    if (index < 0) index = downloads.length - 1;
    const current = downloads[index];
    $("download").hidden = !current;
    if (current) {
      const count = downloads.length > 1 ? ` (${index + 1} of ${downloads.length})` : "";
      const bytes = `${formatBytes(current.received)} of ${formatBytes(current.total)}`;
      $("download-label").textContent = `Download ${current.plugin_id} ${current.version}${count}: ${bytes}`;
      $("download-bar").max = Math.max(current.total, 1);
      $("download-bar").value = current.received;
      $("download-bar").setAttribute("aria-valuetext", bytes);
    }
    const stages = $("stages");
    const messages = op.messages || [];
    while (stages.children.length > messages.length) stages.lastChild.remove();
    for (let i = stages.children.length; i < messages.length; i++) stages.append(el("li", { text: messages[i] }));
  }

  /** What is installed (id, version, enabled), comparable as a string; listed even when the repository is unreadable. */
  function installedState(catalogue) {
    if (!catalogue) return null;
    return JSON.stringify(catalogue.plugins.filter((p) => p.installed_version !== null).map((p) => [p.id, p.installed_version, p.enabled]));
  }

  function doneSummary(kind, pluginId, result) {
    const name = pluginName(pluginId);
    const plugin = result.plugin;
    let text;
    if (!result.changed) text = `Nothing to do: ${name} is already in that state.`;
    else if (kind === "uninstall") text = `${name} was uninstalled.`;
    else if (plugin) text = `${name} ${plugin.version} is installed and ${plugin.enabled ? "enabled" : "disabled"}.`;
    else text = `${name}: done.`;
    const parts = [el("span", { class: "headline", text: `Done. ${text}` })];
    if (result.changes && result.changes.length) parts.push(el("span", { class: "reason", text: `Changes: ${result.changes.join("; ")}` }));
    if (result.load_error) parts.push(el("span", { class: "reason", text: `Installed, but the backend did not load: ${result.load_error}` }));
    return parts;
  }

  async function failedSummary(pluginId, reason, exitCode, before) {
    let after = null;
    try {
      after = await loadPlugins();
    } catch (exc) {
      if (exc instanceof AuthError) throw exc;
    }
    const now = installedState(after);
    const check = now === null || before === null ? "The page could not check the installed plugins afterwards: refresh the list." : now === before ? "Nothing changed." : "The installed plugins changed: see the list below.";
    const head = exitCode === 75 ? "Busy: another operation is running." : exitCode === 3 ? `Refused: ${pluginName(pluginId)} failed a security check.` : `Failed: ${pluginName(pluginId)}.`;
    return [
      el("span", { class: "headline", text: head }),
      el("span", { class: "reason", id: "status-reason", text: oneLine(reason) }),
      el("span", { class: "unchanged", text: check }),
    ];
  }

  async function follow(operationId, kind, pluginId, before) {
    for (;;) {
      const { data: op } = await api("GET", `/operations/${operationId}`);
      showProgress(op);
      if (op.status === "done") {
        await loadPlugins();
        showStatus("done", `${VERB[kind] || kind} ${pluginName(pluginId)}: done`, doneSummary(kind, pluginId, op.result || {}));
        return;
      }
      if (op.status === "failed") {
        const summary = await failedSummary(pluginId, op.error || "failed", op.exit_code, before);
        showStatus("failed", `${VERB[kind] || kind} ${pluginName(pluginId)}: ${op.exit_code === 75 ? "busy" : "refused"}`, summary);
        return;
      }
      await sleep(POLL_MS);
    }
  }

  async function runOperation(kind, pluginId, path, body) {
    if (state.busy) return;
    setBusy(true);
    const before = installedState(state.catalogue);
    const title = `${VERB[kind] || kind} ${pluginName(pluginId)}`;
    $("download").hidden = true;
    $("stages").replaceChildren();
    showStatus("running", title, el("span", { class: "headline", text: `${title}…` }));
    try {
      let started;
      try {
        started = await api("POST", `${path}?wait=false`, body);
      } catch (exc) {
        if (!(exc instanceof ApiError)) throw exc;
        const summary = await failedSummary(pluginId, exc.message, exc.body.exit_code, before);
        showStatus("failed", `${title}: ${exc.status === 409 ? "busy" : "refused"}`, summary);
        if (exc.status === 409) await followOthers();
        return;
      }
      await follow(started.data.operation_id, kind, pluginId, before);
    } catch (exc) {
      if (exc instanceof AuthError) return;
      showStatus("failed", `${title}: error`, [el("span", { class: "headline", text: "The page lost track of the operation." }), el("span", { class: "reason", text: oneLine(exc.message) })]);
    } finally {
      setBusy(false);
    }
  }

  /** Another admin's operation: keep the buttons disabled until it has finished, then refresh. */
  async function followOthers() {
    setBusy(true);
    try {
      for (;;) {
        const { data } = await api("GET", "/operations");
        if (!data.current) break;
        await sleep(POLL_MS * 2);
      }
      await loadPlugins();
    } finally {
      setBusy(false);
    }
  }

  function onAction(kind, p) {
    if (state.busy) return;
    switch (kind) {
      case "install":
        return runOperation("install", p.id, "/install-remote", { addon_id: p.id });
      case "upgrade":
        return runOperation("upgrade", p.id, "/install-remote", { addon_id: p.id });
      case "uninstall":
        return askUninstall(p);
      default:
        return runOperation(kind, p.id, `/${p.id}/${kind}`);
    }
  }

  function askUninstall(p) {
    const dialog = $("uninstall-dialog");
    state.pendingUninstall = p;
    $("uninstall-title").textContent = `Uninstall ${p.name}?`;
    $("keep-data").checked = false;
    dialog.returnValue = "";
    dialog.showModal();
    $("uninstall-cancel").focus();
  }

  function onUninstallClosed() {
    const dialog = $("uninstall-dialog");
    const p = state.pendingUninstall;
    state.pendingUninstall = null;
    if (!p || dialog.returnValue !== "confirm") return;
    runOperation("uninstall", p.id, `/${p.id}/uninstall`, { keep_data: $("keep-data").checked });
  }

  // -- start ------------------------------------------------------------------

  async function start() {
    $("login-form").addEventListener("submit", onLogin);
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    $("refresh").addEventListener("click", () => loadPlugins().catch(() => {}));
    $("history-refresh").addEventListener("click", () => loadHistory().catch(() => {}));
    $("status-dismiss").addEventListener("click", () => ($("status-panel").hidden = true));
    $("uninstall-dialog").addEventListener("close", onUninstallClosed);
    for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
    if (!token()) {
      showLogin("");
      return;
    }
    $("nav").hidden = false;
    await showView(location.hash === "#history" ? "history" : "plugins");
    try {
      const { data } = await api("GET", "/operations");
      if (data.current) {
        showStatus("running", "Another operation is running", el("span", { class: "headline", text: "Another admin's operation is running; the buttons are disabled until it has finished." }));
        await followOthers();
        $("status-panel").hidden = true;
      }
    } catch (_) {
      /* the login prompt is already shown */
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    start().catch((exc) => console.error(exc));
  });
})();
