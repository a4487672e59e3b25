// Vigil's dashboard: reads the Vigil API (with the admin token kept in sessionStorage when one
// was entered), follows the live event stream, and renders the page named by
// <body data-page>. No framework, no build step.
"use strict";

(() => {
  // Errors of the page itself (the tests read them: a page with one is broken).
  window.vigilErrors = [];
  window.addEventListener("error", (e) => window.vigilErrors.push(String(e.message || e.type)), true);
  window.addEventListener("unhandledrejection", (e) => window.vigilErrors.push(String(e.reason)));
  document.addEventListener("securitypolicyviolation", (e) =>
    window.vigilErrors.push("blocked by the content security policy: " + e.violatedDirective));

  const TOKEN_KEY = "vigil.adminToken";
  const PAGE_SIZE = 50;
  const KINDS = ["registered", "down", "up", "suspect", "disabled", "enabled", "forced_down",
    "unforced", "deleted", "frozen", "thawed", "stopped", "health", "flapping", "flapping_ended",
    "mass_failure", "mass_failure_ended"];
  const main = document.getElementById("main");
  const banner = document.getElementById("banner");
  const liveLabel = document.getElementById("live");

  // ---- small helpers ----

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else el.setAttribute(key, value === true ? "" : value);
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) el.setAttribute(key, value);
    }
    append(el, children);
    return el;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /**
   * Replaces `box`'s content with `content`, keeping the keyboard focus on the same control
   * (a column's sort button, a service's link, a zone's button) when it was inside.
   */
  function redraw(box, ...content) {
    const active = document.activeElement;
    let again = null;
    if (active && box.contains(active)) {
      const th = active.closest("[data-sort]");
      const row = active.closest("tr[data-id], tr[data-group]");
      if (th) again = `[data-sort="${th.dataset.sort}"] button`;
      else if (row && row.dataset.id) again = `tr[data-id="${row.dataset.id}"] a`;
      else if (row) again = `tr[data-group="${CSS.escape(row.dataset.group)}"] button`;
    }
    box.replaceChildren(...content);
    if (again) {
      const target = box.querySelector(again);
      if (target) target.focus();
    }
  }

  /** Marks the first time something is on screen (BENCHMARKS.md reads these). */
  function mark(name) {
    if (!performance.getEntriesByName(name).length) performance.mark(name);
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** A call of the Vigil API: { data, response }, or an ApiError worded as the API words it. */
  async function api(path, options = {}) {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    let body;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(path, { method: options.method || "GET", headers, body, cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "unreachable", "the server cannot be reached (" + e.message + ")");
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error;
      throw new ApiError(response.status, error ? error.code : "http_" + response.status,
        error ? error.message : response.status + " " + response.statusText);
    }
    return { data, response };
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== "" && value !== null && value !== undefined) search.set(key, value);
    }
    const text = search.toString();
    return text ? "?" + text : "";
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }

  function when(iso) {
    if (!iso) return "–";
    // UTC, as the API and the CLI show times.
    return new Date(iso).toISOString().slice(0, 19).replace("T", " ") + "Z";
  }

  function errorText(e) {
    return e instanceof ApiError ? e.message : String(e);
  }

  function showError(where, e) {
    where.replaceChildren(h("p", { class: "error", role: "alert" }, errorText(e)));
    if (e instanceof ApiError && e.status === 401) {
      where.append(h("p", {}, "Enter a reader or admin token (top right) to read this server."));
    }
  }

  /** Calls `fn` at most once per `ms`, the last call's arguments winning. */
  function throttle(fn, ms) {
    let timer = null;
    return () => {
      if (timer === null) {
        timer = setTimeout(() => {
          timer = null;
          fn();
        }, ms);
      }
    };
  }

  // ---- the dialog: confirmations, the token, a reason ----

  const dialog = document.getElementById("dialog");
  const dialogForm = document.getElementById("dialog-form");
  const dialogError = document.getElementById("dialog-error");

  /**
   * Asks for confirmation (and `fields`), then runs `run(values)`; an error it throws is shown
   * in the dialog, worded as the API words it, and the dialog stays open.
   */
  function ask({ title, text, fields = [], ok = "OK", danger = false, run }) {
    document.getElementById("dialog-title").textContent = title;
    document.getElementById("dialog-text").textContent = text || "";
    const box = document.getElementById("dialog-fields");
    box.replaceChildren(...fields.map((f) => h("label", {},
      f.label,
      h("input", { name: f.name, type: f.type || "text", autocomplete: "off", value: f.value || "", id: "field-" + f.name }))));
    const okButton = document.getElementById("dialog-ok");
    okButton.textContent = ok;
    okButton.className = danger ? "danger" : "";
    dialogError.hidden = true;
    dialogForm.onsubmit = async (event) => {
      event.preventDefault();
      const values = {};
      for (const f of fields) values[f.name] = box.querySelector(`[name="${f.name}"]`).value;
      okButton.disabled = true;
      try {
        await run(values);
        dialog.close();
      } catch (e) {
        dialogError.textContent = errorText(e);
        dialogError.hidden = false;
      } finally {
        okButton.disabled = false;
      }
    };
    document.getElementById("dialog-cancel").onclick = () => dialog.close();
    dialog.showModal();
    const first = box.querySelector("input");
    (first || okButton).focus();
  }

  const tokenButton = document.getElementById("token-button");
  function showToken() {
    tokenButton.textContent = token() ? "Token ✓" : "Token";
    tokenButton.setAttribute("aria-label", token() ? "Token (entered; change or forget it)" : "Enter a token");
  }
  tokenButton.addEventListener("click", () => ask({
    title: "Token",
    text: "A reader token reads; changes need an admin token. Kept in this browser tab only (sessionStorage), sent as Authorization: Bearer. Leave empty to forget it.",
    fields: [{ name: "token", label: "Token", type: "password" }],
    ok: "Save",
    run: async ({ token: value }) => {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
      showToken();
      refreshPage();
      restartStream();
    },
  }));
  showToken();

  /** The token fields an admin action asks for when none was entered yet. */
  function tokenFields() {
    return token() ? [] : [{ name: "token", label: "Admin token", type: "password" }];
  }
  function keepToken(values) {
    if (values.token) {
      sessionStorage.setItem(TOKEN_KEY, values.token);
      showToken();
    }
  }

  // ---- the live stream: /v1/events/stream, resumed with Last-Event-ID ----

  const listeners = new Set();
  let lastEventId = null;
  let streamAbort = null;
  let everConnected = false;
  let refreshPage = () => {};
  let wake = null;

  function connected(on, why, denied) {
    liveLabel.textContent = on ? "live" : "offline";
    liveLabel.className = "live " + (on ? "on" : "off");
    if (on) {
      banner.hidden = true;
      banner.textContent = "";
    } else if (denied) {
      banner.textContent = "No live updates: " + why + ". Enter it with the button “Token”.";
      banner.hidden = false;
    } else if (everConnected || why) {
      banner.textContent = "Connection to the server lost" + (why ? " (" + why + ")" : "") +
        "; reconnecting… The page shows what was known before.";
      banner.hidden = false;
    }
  }

  function restartStream() {
    if (streamAbort) streamAbort.abort();
    if (wake) wake();
  }

  async function follow() {
    let delay = 250;
    let denied = false;
    for (;;) {
      denied = false;
      const controller = new AbortController();
      streamAbort = controller;
      let why = null;
      try {
        const headers = { Accept: "text/event-stream" };
        if (token()) headers.Authorization = "Bearer " + token();
        if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
        const response = await fetch("/v1/events/stream", { headers, signal: controller.signal, cache: "no-store" });
        if (!response.ok) {
          let message = response.status + " " + response.statusText;
          try {
            message = (await response.json()).error.message;
          } catch (e) { /* not our error body */ }
          if (response.status === 401 || response.status === 403) {
            denied = true;
            message = "live updates need a reader or admin token: " + message;
          }
          throw new Error(message);
        }
        const wasConnected = everConnected;
        everConnected = true;
        connected(true);
        delay = 250;
        if (wasConnected) refreshPage();
        await readEvents(response.body.getReader(), controller);
        why = "the stream ended";
      } catch (e) {
        why = controller.signal.aborted ? null : e.message || String(e);
      }
      controller.abort();
      if (why !== null) {
        connected(false, why, denied);
        await new Promise((resolve) => {
          wake = resolve;
          setTimeout(resolve, denied ? 5000 : delay);
        });
        wake = null;
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  async function readEvents(reader, controller) {
    const decoder = new TextDecoder();
    let buffer = "";
    let silence = null;
    const watch = () => {
      clearTimeout(silence);
      // The server sends a comment every 15 s: a longer silence is a dead connection.
      silence = setTimeout(() => controller.abort(), 40000);
    };
    watch();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        watch();
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          dispatch(block);
        }
      }
    } finally {
      clearTimeout(silence);
    }
  }

  function dispatch(block) {
    let data = "";
    let id = null;
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
    }
    if (id !== null) lastEventId = id;
    if (!data) return;
    let event;
    try {
      event = JSON.parse(data);
    } catch (e) {
      return;
    }
    for (const listener of listeners) listener(event);
  }

  // ---- the pages ----

  function badge(service) {
    const out = [h("span", { class: "badge " + service.state }, service.state)];
    if (service.suspect) out.push(" ", h("span", { class: "badge suspect" }, "suspect"));
    if (service.disabled) out.push(" ", h("span", { class: "badge disabled" }, "disabled"));
    if (service.forced_down) out.push(" ", h("span", { class: "badge forced" }, "forced down"));
    if (service.health && service.health !== "ok") {
      out.push(" ", h("span", { class: "badge health-" + service.health, title: service.health_message || "" }, service.health));
    }
    if (service.flapping) out.push(" ", h("span", { class: "badge suspect" }, "flapping"));
    if (service.in_maintenance) {
      out.push(" ", h("span", { class: "badge maintenance", title: service.maintenance_reason || "" }, "maintenance"));
    }
    return out;
  }

  const COLUMNS = [
    ["binary", "Binary", "binary", (sv) => sv.binary],
    ["host", "Host", "host", (sv) => h("a", { href: "/ui/services/" + sv.id }, sv.host)],
    ["zone", "Zone", "zone", (sv) => sv.zone],
    ["status", "Status", "status", (sv) => sv.status],
    ["state", "State", "state", (sv) => sv.state + (sv.forced_down ? " (forced)" : "") + (sv.suspect ? " · suspect" : "")
      + (sv.health && sv.health !== "ok" ? " · " + sv.health : "") + (sv.flapping ? " · flapping" : "")
      + (sv.in_maintenance ? " · maintenance" : "")],
    ["updated_at", "Updated at", "updated_at", (sv) => when(sv.updated_at)],
    ["disabled_reason", "Disabled reason", "disabled_reason", (sv) => sv.disabled_reason || ""],
    ["age", "Last heartbeat", "last_heartbeat_age_s", (sv) => age(sv.last_heartbeat_age_s) + " ago", "num"],
    ["reports", "Reports", "report_count", (sv) => sv.report_count, "num"],
    ["suspicion", "Suspicion", "suspicion", (sv) => (sv.suspicion === null ? "–" : sv.suspicion.toFixed(2)), "num"],
    ["source", "Source", "source", (sv) => sv.source],
  ];

  function serviceRow(sv) {
    const classes = ["state-" + sv.state];
    if (sv.suspect) classes.push("suspect");
    if (sv.disabled) classes.push("disabled");
    if (sv.forced_down) classes.push("forced");
    return h("tr", { "data-id": sv.id, class: classes.join(" ") },
      COLUMNS.map(([key, , , render, cls]) =>
        h("td", { class: [key, cls, key === "disabled_reason" ? "wrap" : ""].filter(Boolean).join(" ") }, render(sv))));
  }

  /** Marks a shown row with what an event says at once, before the page is read again. */
  function patchRow(event) {
    const row = main.querySelector(`tr[data-id="${event.service_id}"]`);
    if (!row) return;
    const cell = (name) => row.querySelector("td." + name);
    if (event.kind === "down" || event.kind === "up") {
      row.classList.remove("state-up", "state-down", "state-unknown", "state-stopped", "state-unreachable");
      row.classList.add("state-" + event.kind);
      if (event.kind === "down") row.classList.remove("suspect");
      cell("state").textContent = event.kind;
    } else if (event.kind === "suspect") {
      row.classList.add("suspect");
      cell("state").textContent = "up · suspect";
    } else if (event.kind === "disabled" || event.kind === "enabled") {
      row.classList.toggle("disabled", event.kind === "disabled");
      cell("status").textContent = event.kind;
      cell("disabled_reason").textContent = event.kind === "disabled" ? event.reason || "" : "";
    } else if (event.kind === "deleted") {
      row.remove();
    }
  }

  function countsCards(all) {
    const card = (cls, n, label) => h("div", { class: "card " + cls, "data-count": cls },
      h("span", { class: "n" }, n), h("span", { class: "l" }, label));
    return [
      card("total", all.total, "services"),
      card("up", all.up, "up"),
      card("down", all.down, "down"),
      card("suspect", all.suspect, "suspect"),
      card("disabled", all.disabled, "disabled"),
      card("forced", all.forced_down, "forced down"),
      all.unknown ? card("unknown", all.unknown, "unknown") : null,
      all.stopped ? card("stopped", all.stopped, "stopped") : null,
      all.unreachable ? card("unreachable", all.unreachable, "unreachable") : null,
    ];
  }

  function groupTable(caption, name, groups, onPick) {
    const entries = Object.entries(groups);
    if (!entries.length) return h("p", { class: "empty" }, "No services yet.");
    return h("div", { class: "scroll" }, h("table", { id: name },
      h("caption", { class: "muted" }, caption),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, name === "zones" ? "Zone" : "Source"),
        ["Total", "Up", "Down", "Suspect", "Disabled", "Forced down"].map((t) => h("th", { scope: "col", class: "num" }, t)))),
      h("tbody", {}, entries.map(([key, c]) => h("tr", { class: c.down ? "state-down" : "", "data-group": key },
        h("th", { scope: "row" }, h("button", { type: "button", class: "quiet", onclick: () => onPick(key), "aria-label": `Show the services of ${key}` }, key)),
        [c.total, c.up, c.down, c.suspect, c.disabled, c.forced_down].map((n) => h("td", { class: "num" }, n)))))));
  }

  function eventsTable(events, id) {
    if (!events.length) return h("p", { class: "empty" }, "No events.");
    return h("div", { class: "scroll" }, h("table", { id },
      h("thead", {}, h("tr", {}, ["When", "Event", "Service", "Reason"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, events.map((e) => h("tr", { class: e.kind === "down" ? "state-down" : "", "data-event": e.id },
        h("td", {}, when(e.at)),
        h("td", {}, h("span", { class: "badge " + kindClass(e.kind) }, e.kind.replace("_", " "))),
        h("td", {}, e.kind === "deleted" || !e.service_id ? `${e.host} / ${e.binary}` : h("a", { href: "/ui/services/" + e.service_id }, `${e.host} / ${e.binary}`)),
        h("td", { class: "wrap" }, e.reason || ""))))));
  }

  function kindClass(kind) {
    return { down: "down", up: "up", registered: "up", enabled: "up", unforced: "up", suspect: "suspect",
      forced_down: "forced", disabled: "disabled", deleted: "disabled", frozen: "disabled", thawed: "up" }[kind] || "";
  }

  function overviewPage() {
    const url = new URL(location.href);
    const filters = {};
    for (const key of ["host", "binary", "zone", "state", "status", "source", "q"]) filters[key] = url.searchParams.get(key) || "";
    let sort = url.searchParams.get("sort") || "";
    let offset = Number(url.searchParams.get("offset")) || 0;

    const cards = h("div", { class: "cards", id: "counts" });
    const cutOff = h("div", { id: "mass-failure", role: "alert", hidden: true });
    const zones = h("div", {});
    const sources = h("div", {});
    const recent = h("div", {});
    const tableBox = h("div", {});
    const pagerText = h("span", { id: "pager-text", role: "status" });
    const prev = h("button", { type: "button", id: "prev", onclick: () => { offset = Math.max(0, offset - PAGE_SIZE); loadServices(); } }, "← Previous");
    const next = h("button", { type: "button", id: "next", onclick: () => { offset += PAGE_SIZE; loadServices(); } }, "Next →");
    const zoneList = h("datalist", { id: "zone-list" });
    const sourceList = h("datalist", { id: "source-list" });

    const field = (name, label, extra = {}) => h("label", {}, label,
      h("input", Object.assign({ name, id: "filter-" + name, value: filters[name], type: "text", autocomplete: "off" }, extra)));
    const choice = (name, label, values) => h("label", {}, label,
      h("select", { name, id: "filter-" + name }, h("option", { value: "" }, "any"),
        values.map((v) => h("option", { value: v, selected: filters[name] === v }, v))));
    const form = h("form", { class: "filters", role: "search", "aria-label": "Filter the services", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Search", h("input", { name: "q", id: "filter-q", type: "search", value: filters.q, placeholder: "host, binary, zone, reason…" })),
      field("host", "Host"), field("binary", "Binary"), field("zone", "Zone", { list: "zone-list" }),
      choice("state", "State", ["up", "down", "stopped", "unreachable", "unknown"]), choice("status", "Status", ["enabled", "disabled"]),
      field("source", "Source", { list: "source-list" }),
      h("button", { type: "button", class: "quiet", onclick: () => { for (const el of form.elements) if (el.name) el.value = ""; changed(); } }, "Clear"),
      zoneList, sourceList);

    const changed = () => {
      for (const el of form.elements) if (el.name) filters[el.name] = el.value.trim();
      offset = 0;
      loadServices();
    };
    let typing = null;
    const typed = (e) => {
      clearTimeout(typing);
      typing = setTimeout(changed, e.type === "change" || e.target.tagName === "SELECT" ? 0 : 250);
    };
    form.addEventListener("input", typed);
    form.addEventListener("change", typed);

    main.replaceChildren(
      h("h1", {}, "Overview"),
      cutOff,
      cards,
      h("div", { class: "grid2" },
        h("section", { "aria-labelledby": "zones-h" }, h("h2", { id: "zones-h" }, "By zone"), zones),
        h("section", { "aria-labelledby": "sources-h" }, h("h2", { id: "sources-h" }, "By source"), sources)),
      h("section", { "aria-labelledby": "recent-h" }, h("h2", { id: "recent-h" }, "Recently changed"), recent),
      h("section", { "aria-labelledby": "services-h" }, h("h2", { id: "services-h" }, "Services"), form,
        h("div", { class: "pager" }, prev, next, pagerText), tableBox));

    const pick = (name) => (value) => {
      form.elements[name].value = value;
      changed();
      document.getElementById("services-h").scrollIntoView();
    };

    async function loadOverview() {
      try {
        const { data } = await api("/ui/api/overview");
        cards.replaceChildren(...countsCards(data.all).filter(Boolean));
        cutOff.hidden = !data.mass_failure;
        cutOff.textContent = data.mass_failure || "";
        mark("vigil:counts");
        redraw(zones, groupTable("Services by availability zone", "zones", data.zones, pick("zone")));
        redraw(sources, groupTable("Services by where their heartbeats come from", "sources", data.sources, pick("source")));
        zoneList.replaceChildren(...Object.keys(data.zones).map((z) => h("option", { value: z })));
        sourceList.replaceChildren(...Object.keys(data.sources).map((z) => h("option", { value: z })));
      } catch (e) {
        showError(cards, e);
      }
    }

    async function loadRecent() {
      try {
        const { data } = await api("/v1/events?limit=10");
        recent.replaceChildren(eventsTable(data.events, "recent-events"));
      } catch (e) {
        showError(recent, e);
      }
    }

    let generation = 0;
    async function loadServices() {
      const mine = ++generation;
      const params = Object.assign({}, filters, { sort, offset: offset || "" });
      history.replaceState(null, "", location.pathname + query(params));
      try {
        const { data, response } = await api("/v1/services" + query(Object.assign({}, params, { offset, limit: PAGE_SIZE, sort: sort || "id" })));
        if (mine !== generation) return;
        const total = Number(response.headers.get("X-Total-Count"));
        redraw(tableBox, servicesTable(data.services));
        mark("vigil:services");
        const from = data.services.length ? offset + 1 : 0;
        pagerText.textContent = `${from}–${offset + data.services.length} of ${total} services`;
        prev.disabled = offset === 0;
        next.disabled = offset + data.services.length >= total;
      } catch (e) {
        if (mine === generation) showError(tableBox, e);
      }
    }

    function servicesTable(services) {
      const [field, descending] = sort.startsWith("-") ? [sort.slice(1), true] : [sort || "id", false];
      const head = h("tr", {}, COLUMNS.map(([key, label, sortKey, , cls]) => {
        const sorted = field === sortKey;
        return h("th", { scope: "col", class: cls, "aria-sort": sorted ? (descending ? "descending" : "ascending") : null, "data-sort": sortKey },
          h("button", { type: "button", onclick: () => { sort = sorted && !descending ? "-" + sortKey : sortKey; offset = 0; loadServices(); } }, label));
      }));
      return h("div", { class: "scroll" }, h("table", { id: "services" },
        h("thead", {}, head),
        h("tbody", {}, services.length ? services.map(serviceRow) : h("tr", {}, h("td", { colspan: COLUMNS.length, class: "empty" }, "No service matches.")))));
    }

    refreshPage = () => {
      loadOverview();
      loadRecent();
      loadServices();
    };
    const soon = throttle(refreshPage, 300);
    listeners.add((event) => {
      patchRow(event);
      soon();
    });
    refreshPage();
    // Ages move on their own: read again now and then.
    setInterval(() => { if (!document.hidden) refreshPage(); }, 5000);
  }

  function servicePage() {
    const id = Number(location.pathname.split("/").pop());

    let passedOpen = false;
    document.addEventListener("toggle", (e) => {
      if (e.target.id === "passed-checks") passedOpen = e.target.open;
    }, true);

    async function load() {
      let service;
      try {
        service = (await api(`/v1/services/${id}`)).data;
      } catch (e) {
        showError(main, e);
        main.append(h("p", {}, h("a", { href: "/" }, "Back to the overview")));
        return;
      }
      document.title = `${service.host} / ${service.binary} · Vigil`;
      const [events, diagnosis, beats] = await Promise.allSettled([
        api(`/v1/services/${id}/events?limit=200`), api(`/v1/services/${id}/diagnosis`), api(`/ui/api/services/${id}/beats`)]);
      main.replaceChildren(
        h("p", {}, h("a", { href: "/" }, "← Overview")),
        h("h1", {}, `${service.host} / ${service.binary} `, badge(service)),
        actions(service),
        h("div", { class: "grid2" },
          h("section", { "aria-labelledby": "facts-h" }, h("h2", { id: "facts-h" }, "Service"), facts(service, beats)),
          h("section", { "aria-labelledby": "doctor-h" }, h("h2", { id: "doctor-h" }, "Doctor"), findings(diagnosis))),
        h("section", { "aria-labelledby": "gaps-h" }, h("h2", { id: "gaps-h" }, "Heartbeat gaps"), gapsChart(service, beats)),
        h("section", { "aria-labelledby": "history-h" }, h("h2", { id: "history-h" }, "History"), historySection(service, events)));
    }

    function facts(service, beats) {
      const offset = beats.status === "fulfilled" ? beats.value.data : null;
      const rows = [
        ["ID", service.id], ["Zone", service.zone], ["Topic", service.topic || "–"], ["Source", service.source],
        ["Status", service.status], ["Disabled reason", service.disabled_reason || "–"],
        ["Forced down", service.forced_down ? "yes" : "no"],
        ["Maintenance", service.in_maintenance ? service.maintenance_reason || "yes" : "no"],
        ["Last heartbeat", `${age(service.last_heartbeat_age_s)} ago (${when(service.updated_at)})`],
        ["Report interval", service.report_interval + " s"],
        ["Reports", service.report_count],
        ["Suspicion", service.suspicion === null ? "not enough heartbeats yet" : service.suspicion.toFixed(2)],
        ["Reporter version", service.version || "not reported"],
        ["Clock offset", !offset || offset.clock_offset_s === null ? "not measured (the reporter sends no sent_at)"
          : `${offset.clock_offset_s >= 0 ? "+" : ""}${offset.clock_offset_s.toFixed(3)} s` +
            (offset.clock_offset_error_s !== null ? ` (± ${offset.clock_offset_error_s.toFixed(3)} s)` : "")],
        ["Registered", when(service.created_at)],
        ["Changed by an admin", when(service.modified_at)],
      ];
      return h("dl", { class: "facts", id: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", { "data-fact": k }, String(v))]));
    }

    function findings(diagnosis) {
      if (diagnosis.status === "rejected") return h("p", { class: "error" }, errorText(diagnosis.reason));
      const list = diagnosis.value.data.findings;
      if (!list.length) return h("p", { class: "empty" }, "No findings.");
      const one = (f) => h("div", { class: "finding " + f.severity, "data-check": f.check },
        h("h3", {}, `${f.severity === "ok" ? "✓" : f.severity === "warning" ? "⚠" : "✗"} ${f.summary}`),
        f.detail ? h("p", {}, f.detail) : null,
        f.remedy ? h("p", {}, h("strong", {}, "Advice: "), f.remedy) : null);
      // Problems first; the checks that passed folded below them.
      const rank = { error: 0, warning: 1, ok: 2 };
      const problems = list.filter((f) => f.severity !== "ok").sort((a, b) => rank[a.severity] - rank[b.severity]);
      const passed = list.filter((f) => f.severity === "ok");
      return h("div", { id: "findings" },
        problems.length ? problems.map(one) : h("p", {}, "✓ Nothing wrong found."),
        passed.length ? h("details", { id: "passed-checks", open: passedOpen }, h("summary", {}, `${passed.length} checks passed`), passed.map(one)) : null);
    }

    function gapsChart(service, beats) {
      if (beats.status === "rejected") return h("p", { class: "error" }, errorText(beats.reason));
      const { gaps, report_interval: interval, service_down_time: downTime } = beats.value.data;
      const bars = gaps.map((g) => ({ value: g, label: g.toFixed(2) + " s" }));
      bars.push({ value: service.last_heartbeat_age_s, label: "now: " + age(service.last_heartbeat_age_s) + " since the last", now: true });
      const W = 800, H = 200, left = 44, bottom = 18, top = 8;
      const max = Math.max(downTime * 1.15, interval * 1.5, ...bars.map((b) => b.value)) || 1;
      const y = (v) => top + (H - top - bottom) * (1 - Math.min(v, max) / max);
      const step = (W - left) / Math.max(bars.length, 1);
      const rule = (v, cls, text) => [s("line", { x1: left, x2: W, y1: y(v), y2: y(v), class: "rule " + cls }),
        s("text", { x: 2, y: y(v) + 4 }, text)];
      const chart = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", id: "gaps-chart",
        "aria-label": `The last ${gaps.length} gaps between heartbeats against report_interval ${interval} s and service_down_time ${downTime} s` },
        s("line", { x1: left, x2: W, y1: H - bottom, y2: H - bottom, class: "axis" }),
        bars.map((b, i) => s("rect", {
          x: left + i * step + 1, width: Math.max(step - 2, 1), y: y(b.value), height: Math.max(H - bottom - y(b.value), 1),
          class: b.value >= downTime ? "bar-dead" : b.value > interval * 1.5 ? "bar-late" : "bar-ok", opacity: b.now ? 0.55 : 1,
        }, s("title", {}, b.label))),
        rule(interval, "", "interval"), rule(downTime, "dead", "down"),
        s("text", { x: W - 4, y: H - 4, "text-anchor": "end" }, "now (silence so far)"));
      return [
        chart,
        h("p", { class: "legend" }, h("span", {}, h("i", { class: "up" }), "on time"), h("span", {}, h("i", { class: "warn" }), "late (over 1.5 × report_interval)"),
          h("span", {}, h("i", { class: "down" }), "past service_down_time: counted as dead"),
          h("span", {}, `report_interval ${interval} s · service_down_time ${downTime} s · ${gaps.length} recent gaps, the last bar is the silence since the last heartbeat`)),
      ];
    }

    function historySection(service, events) {
      if (events.status === "rejected") return h("p", { class: "error" }, errorText(events.reason));
      const list = events.value.data.events.slice().reverse();
      const start = new Date(list.length ? list[0].at : service.created_at).getTime();
      const end = Date.now();
      const span = Math.max(end - start, 1000);
      const W = 800, left = 70;
      const x = (t) => left + (W - left) * (t - start) / span;
      // Two tracks: liveness (up, suspect, down) and the admin's marks (disabled, forced down).
      const live = [], admin = [];
      let state = "up", disabled = service.disabled && !list.some((e) => e.kind === "disabled"),
        forced = service.forced_down && !list.some((e) => e.kind === "forced_down");
      let from = start, adminFrom = start, reason = "";
      const adminState = () => (forced ? "forced" : disabled ? "disabled" : "none");
      for (const e of list) {
        const t = new Date(e.at).getTime();
        if (["up", "down", "suspect", "registered"].includes(e.kind)) {
          const nextState = e.kind === "registered" ? "up" : e.kind;
          live.push({ from, to: t, state, reason });
          from = t; state = nextState; reason = e.reason || "";
        } else if (["disabled", "enabled", "forced_down", "unforced"].includes(e.kind)) {
          admin.push({ from: adminFrom, to: t, state: adminState() });
          adminFrom = t;
          if (e.kind === "disabled" || e.kind === "enabled") disabled = e.kind === "disabled";
          else forced = e.kind === "forced_down";
        }
      }
      live.push({ from, to: end, state: service.state === "down" ? "down" : service.suspect ? "suspect" : state, reason });
      admin.push({ from: adminFrom, to: end, state: adminState() });
      const track = (segments, yy, name) => [s("text", { x: 0, y: yy + 14 }, name),
        segments.filter((g) => g.to > g.from).map((g) => s("rect", { x: x(g.from), y: yy, width: Math.max(x(g.to) - x(g.from), 1), height: 20, class: "seg-" + g.state },
          s("title", {}, `${g.state} from ${when(new Date(g.from).toISOString())} to ${when(new Date(g.to).toISOString())}${g.reason ? ": " + g.reason : ""}`)))];
      const timeline = s("svg", { class: "chart", viewBox: `0 0 ${W} 80`, role: "img", id: "timeline",
        "aria-label": "When the service was up, suspect or down, and disabled or forced down (the table below lists every change)" },
        track(live, 6, "liveness"), track(admin, 34, "admin"),
        s("text", { x: left, y: 74 }, when(new Date(start).toISOString())),
        s("text", { x: W, y: 74, "text-anchor": "end" }, "now"));
      return [
        timeline,
        h("p", { class: "legend" }, h("span", {}, h("i", { class: "up" }), "up"), h("span", {}, h("i", { class: "warn" }), "suspect / forced down"),
          h("span", {}, h("i", { class: "down" }), "down"), h("span", {}, h("i", { class: "off" }), "disabled"),
          h("span", {}, h("i", { class: "none" }), "admin: enabled, not forced down")),
        eventsTable(events.value.data.events, "service-events"),
      ];
    }

    function actions(service) {
      const act = (label, title, text, body, opts = {}) => h("button", {
        type: "button", class: opts.danger ? "danger" : "", "data-action": opts.name,
        onclick: () => ask({
          title, text, ok: label, danger: opts.danger,
          fields: [...(opts.fields || []), ...tokenFields()],
          run: async (values) => {
            keepToken(values);
            if (opts.remove) {
              await api(`/v1/services/${id}`, { method: "DELETE" });
              location.href = "/";
              return;
            }
            await api(`/v1/services/${id}`, { method: "PATCH", body: body(values) });
            await load();
          },
        }),
      }, label);
      const name = `${service.host} / ${service.binary}`;
      return h("div", { class: "actions", role: "group", "aria-label": "Admin actions" },
        service.disabled
          ? act("Enable", "Enable " + name + "?", "Clears the disabled reason.", () => ({ disabled: false }), { name: "enable" })
          : act("Disable", "Disable " + name + "?", "Schedulers stop placing work on it; it keeps reporting.",
            (v) => ({ disabled: true, disabled_reason: v.reason || null }), { name: "disable", fields: [{ name: "reason", label: "Reason" }] }),
        service.forced_down
          ? act("Clear forced down", "Clear forced down on " + name + "?", "Its heartbeats decide its state again.", () => ({ forced_down: false }), { name: "unforce" })
          : act("Force down", "Force " + name + " down?", "It counts as down whatever its heartbeats say, until cleared.", () => ({ forced_down: true }), { name: "force-down", danger: true }),
        act("Delete", "Delete " + name + "?", "Removes it from the registry; a reporter that still runs registers it again.", null, { name: "delete", danger: true, remove: true }));
    }

    refreshPage = load;
    const soon = throttle(load, 300);
    listeners.add((event) => {
      if (event.service_id === id) soon();
    });
    load();
    setInterval(() => { if (!document.hidden && !dialog.open) load(); }, 10000);
  }

  function eventsPage() {
    const url = new URL(location.href);
    const filters = {};
    for (const key of ["service", "host", "binary", "kind", "since"]) filters[key] = url.searchParams.get(key) || "";
    const box = h("div", {});
    const more = h("button", { type: "button", id: "older", hidden: true }, "Older events");
    const field = (name, label, extra = {}) => h("label", {}, label,
      h("input", Object.assign({ name, id: "filter-" + name, value: filters[name], type: "text", autocomplete: "off" }, extra)));
    const form = h("form", { class: "filters", role: "search", "aria-label": "Filter the events", onsubmit: (e) => { e.preventDefault(); changed(); } },
      field("service", "Service id", { inputmode: "numeric" }), field("host", "Host"), field("binary", "Binary"),
      h("label", {}, "Kind", h("select", { name: "kind", id: "filter-kind" }, h("option", { value: "" }, "any"),
        KINDS.map((k) => h("option", { value: k, selected: filters.kind === k }, k)))),
      field("since", "Since (RFC 3339)", { placeholder: "2026-01-02T03:04:05Z" }),
      h("button", { type: "submit", id: "events-apply" }, "Apply"));
    const changed = () => {
      for (const el of form.elements) if (el.name) filters[el.name] = el.value.trim();
      load();
    };
    form.addEventListener("change", (e) => { if (e.target.tagName === "SELECT") changed(); });
    main.replaceChildren(h("h1", {}, "Events"), form, box, more);
    let shown = [];
    async function load(before) {
      history.replaceState(null, "", location.pathname + query(filters));
      try {
        const { data } = await api("/v1/events" + query(Object.assign({}, filters, { limit: 100, before: before || "" })));
        shown = before ? shown.concat(data.events) : data.events;
        box.replaceChildren(eventsTable(shown, "events"));
        more.hidden = data.next_before === null;
        more.onclick = () => load(data.next_before);
      } catch (e) {
        showError(box, e);
      }
    }
    refreshPage = () => load();
    const soon = throttle(() => load(), 300);
    listeners.add(() => soon());
    load();
  }

  const page = document.body.dataset.page;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
  }
  ({ overview: overviewPage, service: servicePage, events: eventsPage }[page] || overviewPage)();
  follow();
})();
