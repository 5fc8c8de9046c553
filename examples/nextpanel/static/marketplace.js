/* NextPanel marketplace page: plain JavaScript, no build step.
 *
 * Talks to /api/v1/marketplace with the admin bearer token (sessionStorage).
 * Transactions are previewed (POST /preview: the installer's dry run, with the
 * migrations and the tables dropped) and confirmed first, an install with the
 * plugin's settings form when it declares settings, then started
 * with ?wait=false (202, queued) and followed by polling GET operations/{id}.
 * A 409 is retried after its Retry-After seconds. Cards are re-rendered in
 * place, keeping keyboard focus; after an operation focus returns to the card
 * that acted. Errors show the server's title and detail; the library's raw
 * line only inside "Details".
 */
(() => {
  "use strict";

  const API = "/api/v1/marketplace";
  const TOKEN_KEY = "nextpanel.adminToken";
  const POLL_MS = 250;
  const BUSY_RETRIES = 5;

  const $ = (id) => document.getElementById(id);
  const state = { catalogue: null, busy: false, view: "plugins", names: {}, detail: null };

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      const b = body || {};
      super(b.detail !== undefined ? detailText(b.detail) : `HTTP ${status}`);
      this.status = status;
      this.body = b;
      this.retryAfter = retryAfter;
    }
  }

  // -- helpers ----------------------------------------------------------------

  function detailText(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("; ");
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

  /** Server-rendered Markdown (raw HTML already escaped by the server), parsed inertly, links made safe. */
  function safeHtml(html) {
    const doc = new DOMParser().parseFromString(`<div>${html}</div>`, "text/html");
    const root = doc.body.firstChild;
    for (const node of root.querySelectorAll("script, style, iframe, object, embed, img")) node.remove();
    for (const node of root.querySelectorAll("*")) {
      for (const attr of [...node.attributes]) {
        const ok = (node.tagName === "A" && attr.name === "href" && /^(https?:|mailto:|#)/i.test(attr.value)) || attr.name === "title";
        if (!ok) node.removeAttribute(attr.name);
      }
      if (node.tagName === "A") node.setAttribute("rel", "noopener noreferrer nofollow");
    }
    return document.importNode(root, true);
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

  const nameOf = (id) => state.names[id] || id;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function errorParts(body, fallback) {
    const parts = [el("span", { class: "headline", text: body.title || "Failed" }), el("span", { class: "reason", id: "status-reason", text: body.detail || fallback || "" })];
    if (body.raw && body.raw !== body.detail) parts.push(el("details", { class: "raw" }, el("summary", { text: "Details" }), el("code", { text: body.raw })));
    return parts;
  }

  // -- the API ----------------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY);

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
      throw new ApiError(0, { title: "Panel unreachable", detail: "The panel's server did not answer. Check your connection and try again.", raw: exc.message });
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401 || response.status === 403) {
      if (!(data && data.title)) {
        const reason = data && data.detail ? detailText(data.detail) : `HTTP ${response.status}`;
        signOut(response.status === 401 ? "Please sign in: the marketplace needs the admin token." : `The admin token was refused (${reason}). Sign in again.`);
        throw new AuthError(reason);
      }
    }
    if (!response.ok) throw new ApiError(response.status, data, Number(response.headers.get("Retry-After")) || (data && data.retry_after) || 2);
    return { status: response.status, data };
  }

  /** A write that waits out a busy answer (409) for its Retry-After seconds, a few times, saying so. */
  async function postPatiently(path, body, onWait, method = "POST") {
    for (let attempt = 0; ; attempt++) {
      try {
        return await api(method, path, body);
      } catch (exc) {
        if (!(exc instanceof ApiError) || exc.status !== 409 || attempt >= BUSY_RETRIES) throw exc;
        onWait(exc.retryAfter);
        await sleep(exc.retryAfter * 1000);
      }
    }
  }

  // -- login ------------------------------------------------------------------

  function showLogin(message) {
    for (const id of ["nav", "plugins-view", "history-view", "status-panel"]) $(id).hidden = true;
    $("login-view").hidden = false;
    $("login-message").hidden = !message;
    $("login-message").textContent = message || "";
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
    if (!value) return showLogin("Enter the admin token.");
    sessionStorage.setItem(TOKEN_KEY, value);
    $("login-view").hidden = true;
    $("nav").hidden = false;
    await showView(location.hash === "#history" ? "history" : "plugins");
    await loadFleet();
    if (!$("nav").hidden) $("main").focus();
  }

  // -- views ------------------------------------------------------------------

  async function showView(view) {
    if (view !== state.view && !state.busy) $("status-panel").hidden = true;
    state.view = view;
    $("plugins-view").hidden = view !== "plugins";
    $("history-view").hidden = view !== "history";
    for (const tab of document.querySelectorAll(".tab[data-view]")) tab.setAttribute("aria-pressed", String(tab.dataset.view === view));
    if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
    try {
      if (view === "history") await loadHistory();
      else await loadPlugins();
    } catch (exc) {
      if (!(exc instanceof AuthError)) throw exc;
    }
  }

  async function loadPlugins(refresh = false) {
    const box = $("plugins");
    box.setAttribute("aria-busy", "true");
    if (!state.catalogue) box.replaceChildren(...[0, 1, 2].map(() => el("div", { class: "placeholder", "aria-hidden": "true" })));
    let data;
    try {
      ({ data } = await api("GET", `/plugins${refresh ? "?refresh=true" : ""}`));
    } catch (exc) {
      if (exc instanceof AuthError) throw exc;
      $("plugins-error").hidden = false;
      $("plugins-error").textContent = `Could not load the plugins: ${exc.message}`;
      box.setAttribute("aria-busy", "false");
      return null;
    }
    $("plugins-error").hidden = true;
    state.catalogue = data;
    for (const p of data.plugins) state.names[p.id] = p.name;
    renderRepository(data);
    renderCategories(data.categories);
    renderCards();
    box.setAttribute("aria-busy", "false");
    const badge = $("updates-badge");
    badge.hidden = !data.updates;
    badge.textContent = data.updates ? String(data.updates) : "";
    badge.setAttribute("aria-label", `${data.updates} update${data.updates === 1 ? "" : "s"} available`);
    applyBusy();
    return data;
  }

  function renderRepository(data) {
    const repo = data.repository;
    const info = $("repository-info");
    const problem = $("repository-problem");
    problem.hidden = !repo.error;
    if (repo.error) problem.replaceChildren(el("strong", { text: repo.error.title }), repo.error.detail, el("details", { class: "raw" }, el("summary", { text: "Details" }), el("code", { text: repo.error.raw })));
    if (repo.state === "ok") info.textContent = `${repo.plugin_count} plugins from ${repo.url}`;
    else if (repo.state === "none") info.textContent = "No repository is configured: only installed plugins are listed.";
    else if (repo.state === "loading") info.textContent = "The repository's plugin list is being fetched…";
    else info.textContent = "Installed plugins are listed from their own descriptions.";
  }

  function renderCategories(categories) {
    const select = $("category");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "All categories" }), ...categories.map((c) => el("option", { value: c, text: c })));
    select.value = categories.includes(chosen) ? chosen : "";
  }

  function visiblePlugins() {
    const words = $("search").value.toLowerCase().split(/\s+/).filter(Boolean);
    const category = $("category").value;
    return state.catalogue.plugins.filter((p) => (!category || p.category === category) && words.every((w) => `${p.id} ${p.name} ${p.description}`.toLowerCase().includes(w)));
  }

  /** Replace the cards, keeping focus on the same control (or its card) when it still exists. */
  function renderCards(focusCard) {
    if (!state.catalogue) return;
    const box = $("plugins");
    const active = document.activeElement;
    const key = active && box.contains(active) ? active.dataset.key : null;
    const cardOfActive = active && box.contains(active) ? active.closest(".card") : null;
    const plugins = visiblePlugins();
    box.replaceChildren(...plugins.map(renderCard));
    if (!plugins.length) box.append(el("p", { class: "muted", text: state.catalogue.plugins.length ? "No plugin matches the filters." : "No plugins to show." }));
    const total = state.catalogue.plugins.length;
    $("filter-count").textContent = plugins.length === total ? `${total} plugin${total === 1 ? "" : "s"}` : `${plugins.length} of ${total} plugins shown`;
    const target = (key && box.querySelector(`[data-key="${CSS.escape(key)}"]`)) || (focusCard && $(`plugin-${focusCard}`)) || (cardOfActive && $(cardOfActive.id));
    if (target) target.focus();
  }

  function renderCard(p) {
    const installed = p.installed_version !== null;
    const badge = p.load_error ? el("span", { class: "badge error", text: "Load error" })
      : !installed ? el("span", { class: "badge available", text: "Not installed" })
      : p.enabled ? el("span", { class: "badge enabled", text: "Enabled" })
      : el("span", { class: "badge disabled", text: "Disabled" });
    const action = (verb, kind, cls, aria) =>
      el("button", { type: "button", class: cls, "aria-label": `${aria || verb} ${p.name}`, dataset: { action: kind, plugin: p.id, key: `${kind}:${p.id}` }, onclick: () => onAction(kind, p) }, verb);
    const actions = [];
    if (!installed) actions.push(action("Install", "install", "primary"));
    else if (p.update_available) actions.push(action(`Upgrade to ${p.latest_version}`, "upgrade", "primary", `Upgrade to ${p.latest_version}:`));
    if (installed) {
      actions.push(p.enabled ? action("Disable", "disable", "secondary") : action("Enable", "enable", "secondary"));
      if (p.rollback_version) actions.push(action(`Roll back to ${p.rollback_version}`, "rollback", "secondary", `Roll back to ${p.rollback_version}:`));
      actions.push(action("Uninstall", "uninstall", "danger"));
    }
    if (installed && p.has_settings) actions.push(action("Settings", "settings", "secondary", "Settings of"));
    actions.push(action("Details", "details", "secondary", "Details of"));
    const installedText = installed ? [p.installed_version, p.update_available ? el("span", { class: "update" }, ` · ${p.latest_version} available`) : null] : ["—"];
    return el(
      "article",
      { class: "card", id: `plugin-${p.id}`, tabindex: "-1", "aria-labelledby": `plugin-${p.id}-name`, dataset: { plugin: p.id, installed: installed ? p.installed_version : "", enabled: String(p.enabled) } },
      el("div", { class: "card-head" }, el("div", {}, el("h2", { id: `plugin-${p.id}-name`, text: p.name }), el("span", { class: "id", text: p.id })), badge),
      el("p", { class: "description", text: p.description || "No description." }),
      el("dl", { class: "facts" },
        el("dt", { text: "Category" }), el("dd", { text: p.category || "—" }),
        el("dt", { text: "Price" }), el("dd", { text: formatPrice(p.price) }),
        el("dt", { text: "Latest version" }), el("dd", { text: p.latest_version || "—" }),
        el("dt", { text: "Installed" }), el("dd", { class: "installed-version" }, ...installedText),
        el("dt", { text: "Requires" }), el("dd", { text: p.requires.length ? p.requires.join(", ") : "Nothing" }),
        p.required_by.length ? [el("dt", { text: "Required by" }), el("dd", { text: p.required_by.map(nameOf).join(", ") })] : null,
      ),
      p.load_error ? el("p", { class: "notice notice-error load-error", text: `Installed but not loaded: ${p.load_error}` }) : null,
      el("div", { class: "actions" }, ...actions),
    );
  }

  function pluginsText(plugins) {
    return plugins.map((p) => {
      const versions = p.from_version && p.to_version && p.from_version !== p.to_version ? `${p.from_version} → ${p.to_version}` : p.to_version || p.from_version || "";
      const toggled = p.enabled === false ? " (disabled)" : "";
      return `${p.name || p.id} ${versions}${toggled}`.trim();
    }).join(", ");
  }

  const OUTCOME = { done: "Done", failed: "Failed, rolled back", refused: "Refused", busy: "Busy", unreachable: "Repository unreachable", "rolled back": "Failed, rolled back" };

  async function loadHistory() {
    const { data } = await api("GET", "/history?limit=200");
    const rows = data.history.map((h) =>
      el("tr", { dataset: { outcome: h.outcome } },
        el("td", { text: formatTime(h.time) }),
        el("td", { text: h.who }),
        el("td", { text: h.operation }),
        el("td", { text: pluginsText(h.plugins) }),
        el("td", { class: `outcome-${h.outcome.split(" ")[0]}` }, OUTCOME[h.outcome] || h.outcome,
          h.outcome !== "done" && (h.title || h.detail) ? el("span", { class: "reason", text: [h.title, h.detail].filter(Boolean).join(": ") }) : null),
      ));
    $("history-rows").replaceChildren(...rows);
    $("history-empty").hidden = rows.length > 0;
  }

  // -- operations -------------------------------------------------------------

  function applyBusy() {
    for (const button of document.querySelectorAll(".actions button:not([data-action=details]), #refresh")) button.disabled = state.busy;
    $("update-all").disabled = state.busy || !(state.catalogue && state.catalogue.updates);
  }

  function setBusy(busy) {
    state.busy = busy;
    applyBusy();
  }

  const VERB = { install: "Installing", upgrade: "Upgrading", downgrade: "Installing an older version of", "update-all": "Updating all plugins", uninstall: "Uninstalling", rollback: "Rolling back", enable: "Enabling", disable: "Disabling", configure: "Saving the settings of" };

  function showStatus(kind, title, summary) {
    const panel = $("status-panel");
    panel.hidden = false;
    panel.className = `status ${kind}`;
    panel.dataset.state = kind;
    $("status-title").textContent = title;
    $("status-summary").replaceChildren(...(Array.isArray(summary) ? summary : [summary]));
    $("status-dismiss").hidden = kind === "running";
  }

  function showProgress(op) {
    const downloads = op.downloads || [];
    let index = downloads.findIndex((d) => d.received < d.total);
    if (index < 0) index = downloads.length - 1;
    const current = downloads[index];
    $("download").hidden = !current;
    if (current) {
      const count = downloads.length > 1 ? ` (${index + 1} of ${downloads.length})` : "";
      const bytes = `${formatBytes(current.received)} of ${formatBytes(current.total)}`;
      $("download-label").textContent = `Download ${nameOf(current.plugin_id)} ${current.version}${count}: ${bytes}`;
      $("download-bar").max = Math.max(current.total, 1);
      $("download-bar").value = current.received;
      $("download-bar").setAttribute("aria-valuetext", bytes);
    }
    const stages = $("stages");
    const lines = op.status === "queued" ? ["Waiting for the operation before it to finish"] : op.stages || [];
    while (stages.children.length > lines.length) stages.lastChild.remove();
    for (let i = 0; i < lines.length; i++) {
      if (stages.children[i]) stages.children[i].textContent = lines[i];
      else stages.append(el("li", { text: lines[i] }));
    }
  }

  function installedState(catalogue) {
    if (!catalogue) return null;
    return JSON.stringify(catalogue.plugins.filter((p) => p.installed_version !== null).map((p) => [p.id, p.installed_version, p.enabled]));
  }

  function doneSummary(kind, pluginId, op) {
    const name = nameOf(pluginId);
    let text;
    if (!op.changed) text = `Nothing to do: ${kind === "update-all" ? "every plugin is up to date" : kind === "configure" ? `${name}'s settings are already so` : `${name} is already in that state`}.`;
    else if (kind === "configure") text = `${name}'s settings are saved; the plugin has them now.`;
    else if (kind === "uninstall") text = `${name} was uninstalled.`;
    else if (kind === "update-all") text = `${op.changes.length} plugin${op.changes.length === 1 ? "" : "s"} updated.`;
    else if (op.plugin) text = `${name} ${op.plugin.version} is installed and ${op.plugin.enabled ? "enabled" : "disabled"}.`;
    else text = `${name}: done.`;
    const parts = [el("span", { class: "headline", text: `Done. ${text}` })];
    if (op.changes && op.changes.length) parts.push(el("span", { class: "reason", text: `Changes: ${op.changes.join("; ")}` }));
    if (op.load_error) parts.push(el("span", { class: "reason", text: `Installed, but the backend did not load: ${op.load_error}` }));
    if (op.fleet) parts.push(el("span", { class: "reason", text: fleetLine(op.fleet) }));
    return parts;
  }

  // -- the fleet (cluster mode) --------------------------------------------------

  function fleetLine(fleet) {
    const live = fleet.nodes.filter((n) => n.live);
    if (fleet.converged) return `Every live node switched: ${live.length} node${live.length === 1 ? "" : "s"} at generation ${fleet.generation}.`;
    const failed = fleet.nodes.filter((n) => n.live && n.error_generation === fleet.generation).map((n) => n.node_id);
    const parts = [];
    if (fleet.waiting && fleet.waiting.length) parts.push(`still switching: ${fleet.waiting.join(", ")}`);
    if (failed.length) parts.push(`could not apply it (they keep their last good generation): ${failed.join(", ")}`);
    return `Generation ${fleet.generation}: ${parts.join("; ") || "some nodes are behind"}.`;
  }

  function renderFleet(fleet) {
    $("fleet").hidden = !fleet;
    if (!fleet) return;
    $("fleet-title").textContent = `Fleet: generation ${fleet.generation}`;
    $("fleet-nodes").replaceChildren(...fleet.nodes.map((n) => {
      const where = n.generation === null ? "nothing applied yet" : `generation ${n.generation}${n.lag ? ` (${n.lag} behind)` : ""}`;
      const item = el("li", { class: n.error ? "fleet-node fleet-error" : "fleet-node" },
        el("strong", { text: n.node_id }), ` ${n.live ? "live" : "offline"}, ${where}`);
      if (n.error) item.append(el("span", { class: "reason", text: ` — ${n.error}` }));
      return item;
    }));
  }

  async function loadFleet() {
    if (!token()) return; // signed out by the request before (a refused token): keep its message
    try {
      const { data } = await api("GET", "/fleet");
      renderFleet(data);
    } catch (exc) {
      if (exc instanceof AuthError) throw exc;
    }
  }

  async function failedSummary(error, before) {
    let after = null;
    try {
      after = await loadPlugins();
    } catch (exc) {
      if (exc instanceof AuthError) throw exc;
    }
    const now = installedState(after);
    const check = now === null || before === null ? "The page could not check the installed plugins afterwards: refresh the list." : now === before ? "Nothing changed." : "The installed plugins changed: see the list below.";
    return [...errorParts(error), el("span", { class: "unchanged", text: check })];
  }

  async function follow(operationId, kind, pluginId, before, title) {
    for (;;) {
      const { data: op } = await api("GET", `/operations/${operationId}`);
      showProgress(op);
      if (op.status === "queued") showStatus("running", title, el("span", { class: "headline", text: `${title}: waiting for another operation to finish…` }));
      else if (op.status === "running") showStatus("running", title, el("span", { class: "headline", text: `${title}…` }));
      if (op.status === "done") {
        await loadPlugins();
        await loadFleet();
        showStatus("done", `${title}: done`, doneSummary(kind, pluginId, op));
        return;
      }
      if (op.status === "failed") {
        const error = op.error || { title: "Failed" };
        showStatus("failed", `${title}: ${error.title}`, await failedSummary(error, before));
        return;
      }
      await sleep(POLL_MS);
    }
  }

  async function runOperation(kind, pluginId, path, body, method = "POST") {
    if (state.busy) return;
    setBusy(true);
    const before = installedState(state.catalogue);
    const title = pluginId ? `${VERB[kind] || kind} ${nameOf(pluginId)}` : VERB[kind] || kind;
    $("download").hidden = true;
    $("stages").replaceChildren();
    showStatus("running", title, el("span", { class: "headline", text: `${title}…` }));
    try {
      let started;
      try {
        started = await postPatiently(`${path}?wait=false`, body, (seconds) =>
          showStatus("running", title, el("span", { class: "headline", text: `Busy: another operation is running. Trying again in ${seconds} s…` })), method);
      } catch (exc) {
        if (!(exc instanceof ApiError)) throw exc;
        showStatus("failed", `${title}: ${exc.body.title || "refused"}`, await failedSummary(exc.body.title ? exc.body : { title: "Refused", detail: exc.message }, before));
        return;
      }
      await follow(started.data.id, kind, pluginId, before, title);
    } catch (exc) {
      if (exc instanceof AuthError) return;
      showStatus("failed", `${title}: error`, errorParts(exc.body || {}, exc.message));
    } finally {
      setBusy(false);
      if (pluginId && state.view === "plugins") renderCards(pluginId); // focus back on the card that acted
    }
  }

  // -- preview and confirmation ---------------------------------------------------------

  const CONFIRM_VERB = { install: "Install", upgrade: "Upgrade", downgrade: "Install older version", uninstall: "Uninstall", rollback: "Roll back", "update-all": "Update all" };
  const ACTION_WORD = { install: "Install", upgrade: "Upgrade", downgrade: "Downgrade", uninstall: "Remove", rollback: "Roll back", enable: "Enable", disable: "Disable" };

  function changeLine(c) {
    const versions = c.from_version && c.to_version ? `${c.from_version} → ${c.to_version}` : c.to_version || c.from_version || "";
    const facts = [
      ["Runs migrations", c.migrations_up], ["Undoes migrations", c.migrations_down], ["Drops tables", c.tables_dropped],
      ["Drops columns", c.columns_dropped], ["Keeps tables", c.tables_kept],
    ].filter(([, items]) => items && items.length);
    return el("li", { dataset: { plugin: c.id } }, `${ACTION_WORD[c.action] || c.action} ${c.name} ${versions}`,
      c.reason !== "requested" ? el("span", { class: "muted", text: ` (${c.reason})` }) : null,
      facts.length ? el("ul", { class: "db-facts" }, ...facts.map(([label, items]) =>
        el("li", { class: label.startsWith("Drops") ? "drops" : null }, `${label}: `, el("span", { class: "mono", text: items.join(", ") })))) : null);
  }

  /** Inputs for a plugin's settings schema; ``collect()`` gives the values to send (a secret left empty: kept). */
  function settingsForm(fields, prefix, installing) {
    const rows = [];
    const readers = [];
    for (const f of fields) {
      const id = `${prefix}-${f.name}`;
      const hint = f.description ? el("p", { class: "hint", id: `${id}-hint`, text: f.description }) : null;
      const described = hint ? `${id}-hint` : null;
      const current = f.value !== null && f.value !== undefined ? f.value : f.default;
      const label = `${f.title || f.name}${f.required ? " (required)" : ""}`;
      let input;
      if (f.type === "boolean") {
        input = el("input", { type: "checkbox", id, "aria-describedby": described });
        input.checked = Boolean(current);
        rows.push(el("div", { class: "field setting" }, el("label", { class: "check" }, input, ` ${label}`), hint));
        readers.push(() => [f.name, input.checked]);
        continue;
      }
      if (f.enum) {
        input = el("select", { id, "aria-describedby": described, required: f.required },
          f.required && current !== null && current !== undefined ? null : el("option", { value: "", text: "—" }),
          ...f.enum.map((v) => el("option", { value: String(v), text: String(v) })));
        input.value = current === null || current === undefined ? "" : String(current);
      } else if (f.secret) {
        input = el("input", { type: "password", id, autocomplete: "new-password", "aria-describedby": described,
          required: f.required && !f.is_set, placeholder: f.is_set ? "Set: leave empty to keep it" : "Not set" });
      } else {
        const numeric = f.type === "number" || f.type === "integer";
        input = el("input", { type: numeric ? "number" : "text", id, step: f.type === "integer" ? "1" : numeric ? "any" : null,
          "aria-describedby": described, required: f.required, autocomplete: "off" });
        input.value = current === null || current === undefined ? "" : String(current);
      }
      rows.push(el("div", { class: "field setting" }, el("label", { for: id, text: label }), input, hint));
      readers.push(() => {
        const raw = input.value.trim();
        if (raw === "") return f.secret || installing ? null : [f.name, null]; // empty: keep a secret, else back to the default
        if (f.enum) return [f.name, f.enum.find((v) => String(v) === raw)];
        if (f.type === "integer" || f.type === "number") return [f.name, Number(raw)];
        return [f.name, raw];
      });
    }
    return { node: el("fieldset", { class: "settings" }, el("legend", { text: "Settings" }), ...rows), collect: () => Object.fromEntries(readers.map((r) => r()).filter(Boolean)) };
  }

  /** Ask the server what would happen, show it, and resolve to the confirmed options (or null). */
  async function confirmOperation(request, opener) {
    const dialog = $("confirm-dialog");
    const { data: preview } = await api("POST", "/preview", request);
    const needsCascade = preview.needs_confirmation.includes("cascade");
    const needsDowngrade = preview.needs_confirmation.includes("allow_downgrade");
    // Settings the install lacks are asked for in the form below: that refusal is not final.
    const settingsMissing = preview.refusal && preview.refusal.error === "SettingsError" && preview.settings.length > 0;
    const final = preview.refusal && !preview.needs_confirmation.length && !settingsMissing;
    const what = request.addon_id ? nameOf(request.addon_id) : "all plugins";
    $("confirm-title").textContent = `${CONFIRM_VERB[request.operation] || request.operation} ${request.operation === "update-all" ? "" : what}?`.replace("  ", " ");
    const body = [];
    if (final) body.push(el("div", { class: "notice notice-error" }, ...errorParts(preview.refusal)));
    if (needsCascade) body.push(el("p", { class: "notice notice-warn", text: `${preview.refusal ? preview.refusal.detail : ""} Check the box below to uninstall them together.` }));
    if (preview.repairs.length) body.push(el("ul", { class: "changes", "aria-label": "Repairs" }, ...preview.repairs.map((line) => el("li", { text: line }))));
    if (preview.changes.length) body.push(el("ul", { class: "changes", "aria-label": "Changes" }, ...preview.changes.map(changeLine)));
    else if (!preview.repairs.length) body.push(el("p", { text: "Nothing to change." }));
    body.push(el("p", { class: "muted", id: "database-summary", text: `Database: ${preview.database}` }));
    const form = preview.settings.length ? settingsForm(preview.settings, "install-setting", true) : null;
    if (form) body.push(form.node);
    $("confirm-body").replaceChildren(...body);
    $("cascade-row").hidden = !needsCascade;
    $("cascade").checked = false;
    $("keep-data-row").hidden = request.operation !== "uninstall";
    $("keep-data").checked = false;
    $("downgrade-row").hidden = !needsDowngrade;
    $("allow-downgrade").checked = false;
    const ok = $("confirm-ok");
    ok.textContent = CONFIRM_VERB[request.operation] || "Confirm";
    ok.className = request.operation === "uninstall" ? "danger" : "primary";
    const blocked = () => (needsCascade && !$("cascade").checked) || (needsDowngrade && !$("allow-downgrade").checked) || final || !preview.changes.length;
    const update = () => (ok.disabled = Boolean(blocked()));
    $("cascade").onchange = update;
    $("allow-downgrade").onchange = update;
    update();
    dialog.returnValue = "";
    dialog.showModal();
    $("confirm-cancel").focus();
    await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
    if (opener && opener.isConnected) opener.focus();
    if (dialog.returnValue !== "confirm" || blocked()) return null;
    return { cascade: $("cascade").checked, keep_data: $("keep-data").checked, allow_downgrade: $("allow-downgrade").checked, settings: form ? form.collect() : null };
  }

  async function previewThenRun(request, opener, run) {
    if (state.busy) return;
    let options;
    try {
      options = await confirmOperation(request, opener);
    } catch (exc) {
      if (exc instanceof AuthError) return;
      showStatus("failed", "Preview failed", errorParts(exc.body || {}, exc.message));
      return;
    }
    if (options) await run(options);
  }

  function onAction(kind, p) {
    if (kind === "details") return openDetail(p.id);
    if (state.busy) return;
    const opener = document.activeElement;
    switch (kind) {
      case "install":
      case "upgrade":
        return previewThenRun({ operation: kind, addon_id: p.id }, opener, (o) =>
          runOperation(kind, p.id, "/install-remote", { addon_id: p.id, ...(o.settings ? { settings: o.settings } : {}) }));
      case "settings":
        return openSettings(p.id, opener);
      case "uninstall":
        return previewThenRun({ operation: "uninstall", addon_id: p.id }, opener, (o) => runOperation("uninstall", p.id, `/${p.id}/uninstall`, { keep_data: o.keep_data, cascade: o.cascade }));
      case "rollback":
        return previewThenRun({ operation: "rollback", addon_id: p.id }, opener, (o) =>
          runOperation("rollback", p.id, `/${p.id}/rollback`, o.settings ? { settings: o.settings } : undefined));
      default:
        return runOperation(kind, p.id, `/${p.id}/${kind}`);
    }
  }

  // -- the detail view ---------------------------------------------------------------

  async function openDetail(pluginId, version) {
    const dialog = $("detail-dialog");
    const opener = document.activeElement;
    $("detail-title").textContent = nameOf(pluginId);
    $("detail-body").replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    if (!dialog.open) {
      dialog.showModal();
      dialog.addEventListener("close", () => opener && opener.isConnected && opener.focus(), { once: true });
    }
    $("detail-close").focus();
    try {
      const { data } = await api("GET", `/plugins/${pluginId}${version ? `?version=${encodeURIComponent(version)}` : ""}`);
      state.detail = data;
      renderDetail(data);
    } catch (exc) {
      if (exc instanceof AuthError) return dialog.close();
      $("detail-body").replaceChildren(el("div", { class: "notice notice-error" }, ...errorParts(exc.body || {}, exc.message)));
    }
  }

  function renderDetail(d) {
    $("detail-title").textContent = `${d.name} ${d.version}`;
    const picker = el("select", { id: "version-picker" }, ...d.versions.map((v) => el("option", { value: v.version, text: `${v.version}${v.installed ? " (installed)" : ""}` })));
    picker.value = d.version;
    const versionOf = (v) => v.split(/[.+-]/).map((x) => (Number.isNaN(Number(x)) ? x : Number(x)));
    const older = (a, b) => { const x = versionOf(a), y = versionOf(b); for (let i = 0; i < Math.max(x.length, y.length); i++) { if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) < (y[i] ?? 0); } return false; };
    const installThis = el("button", { type: "button", class: "primary", id: "install-version", onclick: () => installVersion(d, picker.value) }, "Install this version");
    const sync = () => {
      const chosen = picker.value;
      installThis.disabled = state.busy || chosen === d.installed_version || !d.versions.find((v) => v.version === chosen && v.in_repository);
      installThis.textContent = d.installed_version && older(chosen, d.installed_version) ? `Install older version ${chosen}` : `Install ${chosen}`;
    };
    picker.addEventListener("change", () => { sync(); openDetail(d.id, picker.value); });
    sync();
    const facts = el("dl", { class: "facts" },
      el("dt", { text: "Author" }), el("dd", { text: d.author || "—" }),
      el("dt", { text: "Category" }), el("dd", { text: d.category || "—" }),
      el("dt", { text: "Price" }), el("dd", { text: formatPrice(d.price) }),
      el("dt", { text: "Installed" }), el("dd", { text: d.installed_version || "Not installed" }),
      el("dt", { text: "Requires" }), el("dd", { text: d.requires.length ? d.requires.join(", ") : "Nothing" }),
      el("dt", { text: "Required by" }), el("dd", { text: d.required_by.length ? d.required_by.map(nameOf).join(", ") : "No installed plugin" }),
      el("dt", { text: "Publisher key" }), el("dd", { class: "mono", id: "publisher-key", text: d.publisher_key_id || "Unknown (not downloaded on this server)" }),
      el("dt", { text: "Shown from" }), el("dd", { text: d.source === "installed" ? "the installed files" : "the repository's package (verified)" }),
    );
    const permissions = d.permissions.length ? el("ul", { id: "permissions" }, ...d.permissions.map((p) => el("li", { title: p.name, text: p.text }))) : el("p", { text: "None." });
    const doc = (title, html, id) => [el("h3", { text: title }), html ? el("div", { class: "document", id }, safeHtml(html)) : el("p", { class: "muted", text: `No ${title.toLowerCase()} in the package.` })];
    $("detail-body").replaceChildren(
      el("p", { text: d.description }),
      facts,
      el("h3", { text: "Permissions it asks for" }), permissions,
      el("h3", { text: "Versions" }),
      el("div", { class: "picker" }, el("div", { class: "field" }, el("label", { for: "version-picker", text: "Version" }), picker), installThis),
      ...doc("README", d.readme_html, "readme"),
      ...doc("Changelog", d.changelog_html, "changelog"),
    );
  }

  async function installVersion(d, version) {
    const downgrade = d.installed_version && version !== d.installed_version && d.versions.findIndex((v) => v.version === version) > d.versions.findIndex((v) => v.version === d.installed_version);
    const operation = downgrade ? "downgrade" : d.installed_version ? "upgrade" : "install";
    $("detail-dialog").close();
    const opener = $(`plugin-${d.id}`);
    await previewThenRun({ operation, addon_id: d.id, version }, opener, (o) =>
      runOperation(operation, d.id, "/install-remote", { addon_id: d.id, version, allow_downgrade: Boolean(o.allow_downgrade), ...(o.settings ? { settings: o.settings } : {}) }));
  }

  // -- settings of an installed plugin ---------------------------------------------------

  async function openSettings(pluginId, opener) {
    const dialog = $("settings-dialog");
    $("settings-title").textContent = `Settings of ${nameOf(pluginId)}`;
    $("settings-body").replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    $("settings-save").disabled = true;
    dialog.returnValue = "";
    dialog.showModal();
    $("settings-cancel").focus();
    let form = null;
    try {
      const { data } = await api("GET", `/plugins/${pluginId}/settings`);
      form = settingsForm(data.fields, "setting", false);
      const who = data.updated_by ? `Last changed by ${data.updated_by}, ${formatTime(data.updated_at)}.` : data.installed_by ? `Installed by ${data.installed_by}, ${formatTime(data.installed_at)}.` : "";
      $("settings-body").replaceChildren(el("p", { class: "muted", text: `${data.plugin_id} ${data.version}. Secret values are never shown. ${who}`.trim() }), form.node);
      $("settings-save").disabled = false;
    } catch (exc) {
      if (exc instanceof AuthError) return dialog.close();
      $("settings-body").replaceChildren(el("div", { class: "notice notice-error" }, ...errorParts(exc.body || {}, exc.message)));
    }
    await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
    if (opener && opener.isConnected) opener.focus();
    if (dialog.returnValue !== "save" || !form) return;
    await runOperation("configure", pluginId, `/plugins/${pluginId}/settings`, { settings: form.collect() }, "PUT");
  }

  // -- start ------------------------------------------------------------------

  async function start() {
    $("login-form").addEventListener("submit", onLogin);
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    $("refresh").addEventListener("click", () => loadPlugins(true).catch(() => {}));
    $("history-refresh").addEventListener("click", () => loadHistory().catch(() => {}));
    $("status-dismiss").addEventListener("click", () => { $("status-panel").hidden = true; $("main").focus(); });
    $("detail-close").addEventListener("click", () => $("detail-dialog").close());
    $("update-all").addEventListener("click", (event) =>
      previewThenRun({ operation: "update-all" }, event.currentTarget, () => runOperation("update-all", "", "/update-all")));
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("search").addEventListener("input", () => renderCards());
    $("category").addEventListener("change", () => renderCards());
    for (const tab of document.querySelectorAll(".tab[data-view]")) tab.addEventListener("click", () => showView(tab.dataset.view));
    if (!token()) return showLogin("");
    $("nav").hidden = false;
    await showView(location.hash === "#history" ? "history" : "plugins");
    await loadFleet();
    try {
      const { data } = await api("GET", "/operations");
      const active = data.recent.find((op) => op.status === "running" || op.status === "queued");
      if (active) {
        setBusy(true);
        try {
          await follow(active.id, active.kind, active.plugin_id, installedState(state.catalogue), `${VERB[active.kind] || active.kind} ${nameOf(active.plugin_id)} (started by another admin)`);
        } finally {
          setBusy(false);
        }
      }
    } catch (_) {
      /* the login prompt is already shown */
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    start().catch((exc) => console.error(exc));
  });
})();
