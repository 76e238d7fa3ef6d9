// Agent desk: log in, set your status, see the live queue (WebSocket), accept or decline a caller, keep the
// caller's context while the call rings and during it, then wrap up with a disposition and notes.
// No build step; all data goes into the page through textContent (never innerHTML).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  let token = sessionStorage.getItem("agentSession") || "";
  let clockOffset = 0;  // server time minus browser time, so waiting times match the server
  let items = [];
  let seen = null;  // ids already shown: anything else is a new caller
  let me = null;
  const declined = new Set();
  const errors = new Map();  // card key -> {text, retry}
  let ws = null;
  let retry = null;
  let generation = 0;
  const baseTitle = document.title;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const key = (item) => `${item.kind}-${item.id}`;
  const words = (code) => (code ? String(code).replace(/_/g, " ") : "");
  const capital = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

  function fmtWait(since) {
    const s = Math.max(0, Math.round((Date.now() + clockOffset - Date.parse(since)) / 1000));
    const m = Math.floor(s / 60);
    return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : `${m}:${String(s % 60).padStart(2, "0")}`;
  }
  function slaLevel(since, sla) {
    const s = (Date.now() + clockOffset - Date.parse(since)) / 1000;
    return s >= sla ? "sla-breach" : s >= sla / 2 ? "sla-warn" : "sla-ok";
  }
  function money(v) {
    return v === null || v === undefined ? null : Number(v).toLocaleString("en-US", { style: "currency", currency: "USD" });
  }

  // The sentiment trend, drawn: a line from the first turn to the last, up is calmer, down is upset.
  function trend(values) {
    const pts = (values || []).filter((v) => typeof v === "number");
    const wrap = el("span", "trend-wrap");
    if (!pts.length) { wrap.textContent = "no speech yet"; return wrap; }
    const w = 110, h = 26, n = Math.max(pts.length - 1, 1);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "trend"); svg.setAttribute("width", w); svg.setAttribute("height", h);
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("role", "img");
    const last = pts[pts.length - 1], first = pts[0];
    const mood = last < -0.3 ? "upset" : last > 0.3 ? "calm" : "neutral";
    const dir = pts.length < 2 ? "" : last < first - 0.15 ? ", getting worse" : last > first + 0.15 ? ", improving" : ", steady";
    svg.setAttribute("aria-label", `sentiment: ${mood}${dir}`);
    const mid = document.createElementNS(SVG, "line");
    mid.setAttribute("x1", 0); mid.setAttribute("x2", w); mid.setAttribute("y1", h / 2); mid.setAttribute("y2", h / 2);
    mid.setAttribute("stroke", "#ccc"); mid.setAttribute("stroke-dasharray", "2 2");
    const line = document.createElementNS(SVG, "polyline");
    const xy = pts.map((v, i) => `${(pts.length === 1 ? w / 2 : (i / n) * (w - 6) + 3).toFixed(1)},${(h / 2 - v * (h / 2 - 3)).toFixed(1)}`);
    line.setAttribute("points", xy.join(" ")); line.setAttribute("fill", "none");
    line.setAttribute("stroke", last < -0.3 ? "#c62828" : last > 0.3 ? "#2e7d32" : "#6d6d6d"); line.setAttribute("stroke-width", "2");
    const dot = document.createElementNS(SVG, "circle");
    const [lx, ly] = xy[xy.length - 1].split(",");
    dot.setAttribute("cx", lx); dot.setAttribute("cy", ly); dot.setAttribute("r", "3"); dot.setAttribute("fill", line.getAttribute("stroke"));
    svg.append(mid, line, dot);
    wrap.append(svg, el("span", "mood", ` ${mood}${dir}`));
    return wrap;
  }

  function conversation(item) {
    const ul = el("ul", "convo");
    const lines = Array.isArray(item.conversation) && item.conversation.length ? item.conversation
      : (item.last_3_messages || []).map((t) => ({ speaker: "caller", text: t }));
    for (const line of lines.slice(-6)) {
      const li = el("li", line.speaker === "bot" ? "bot" : "caller");
      li.append(el("b", null, line.speaker === "bot" ? "Bot: " : "Caller: "), document.createTextNode(line.text));
      ul.append(li);
    }
    return ul;
  }

  function history(rows) {
    if (!Array.isArray(rows) || !rows.length) return el("div", "meta", "No earlier issues.");
    const t = el("table", "history");
    const head = el("tr");
    for (const h of ["Date", "Issue", "Resolved"]) head.append(el("th", null, h));
    t.append(head);
    for (const r of rows.slice(-4)) {
      const tr = el("tr");
      if (typeof r === "object" && r) tr.append(el("td", null, r.date || ""), el("td", null, words(r.type)), el("td", null, r.resolved ? "yes" : "no"));
      else tr.append(el("td", null, ""), el("td", null, String(r)), el("td", null, ""));
      t.append(tr);
    }
    return t;
  }

  // One caller, at a glance: why (in words), who, value, tier, mood, what they want, what was said.
  function context(item, c) {
    c.append(el("h3", "reason", capital(item.trigger_words || words(item.trigger))));
    c.append(el("p", "why", item.reason));
    const who = el("div", "who");
    who.append(el("span", "name", item.customer_name || "Unidentified caller"));
    if (item.caller_masked || item.phone) who.append(el("span", "number", item.caller_masked || item.phone));
    if (item.customer_tier) who.append(el("span", "tier " + item.customer_tier, item.customer_tier));
    if (money(item.lifetime_value)) who.append(el("span", "value", `${money(item.lifetime_value)} lifetime`));
    if (item.caller_verified) who.append(el("span", "verified ok", "verified"));
    c.append(who);
    const meta = el("div", "meta");
    const conf = typeof item.confidence === "number" ? ` (${Math.round(item.confidence * 100)}%)` : "";
    meta.append(el("span", "intent", item.intent_guess ? `Wants: ${words(item.intent_guess)}${conf}` : "Wants: not clear yet"));
    meta.append(trend(item.sentiment_trend));
    c.append(meta);
    if (item.goodwill_offer && item.goodwill_offer.text) c.append(el("div", "meta offer", `You may offer: ${item.goodwill_offer.text}`));
    c.append(conversation(item));
    c.append(history(item.issue_history));
  }

  function card(item) {
    const c = el("article", "card");
    c.id = `item-${key(item)}`;
    c.dataset.kind = item.kind; c.dataset.id = item.id;
    const level = slaLevel(item.since, item.sla_s || 60);
    c.classList.add(level);
    const top = el("div", "meta");
    const wait = el("span", `wait ${level}`, `waiting ${fmtWait(item.since)}`);
    wait.dataset.since = item.since; wait.dataset.sla = item.sla_s || 60;
    top.append(wait, el("span", "queue", `${item.queue} queue`));
    if (item.kind === "callback") top.append(el("span", "kind", "callback"));
    c.append(top);
    if (item.requeued) c.append(el("div", "requeued", `Back at the head: ${item.missed_by.join(", ")} did not take the call`));
    context(item, c);
    const actions = el("div", "actions");
    const accept = el("button", "accept", item.kind === "callback" ? "Accept callback" : "Accept");
    const available = me && me.agent && me.agent.status === "available";
    accept.disabled = !available;
    if (!available) accept.title = "Set yourself available to take callers";
    accept.addEventListener("click", () => acceptItem(item, accept));
    const decline = el("button", "decline", "Decline");
    decline.addEventListener("click", () => declineItem(item));
    actions.append(accept, decline);
    c.append(actions);
    const err = errors.get(key(item));
    if (err) {
      const e = el("div", "error", err.text);
      e.setAttribute("role", "alert");
      if (err.retry) {
        const again = el("button", "decline", "Retry");
        again.addEventListener("click", () => acceptItem(item, accept));
        e.append(" ", again);
      }
      c.append(e);
    }
    return c;
  }

  function renderStats(snap) {
    const stats = $("stats");
    stats.replaceChildren();
    const entries = Object.entries(snap.queue_stats || {});
    if (!entries.length) stats.append(el("span", "stat", "All queues empty"));
    for (const [name, s] of entries) {
      const chip = el("span", `stat sla-${s.level}`);
      chip.dataset.queue = name;
      chip.append(el("b", null, name), document.createTextNode(`${s.waiting} waiting · longest ${fmtWait(new Date(Date.now() + clockOffset - s.longest_wait_s * 1000).toISOString())} · answer within ${Math.round(s.sla_s)} s`));
      stats.append(chip);
    }
    const agents = snap.agents || [];
    const free = agents.filter((a) => a.status === "available").length;
    $("agents-count").textContent = `${free} of ${agents.length} agents available`;
  }

  function renderMe() {
    const box = $("mycall"), body = $("mycall-body");
    const status = $("status");
    if (me && me.agent) {
      $("who").textContent = me.agent.display_name;
      status.disabled = me.agent.status === "busy" || me.agent.status === "wrap_up";
      status.value = me.agent.status;
      $("status-reason").textContent = me.agent.status_reason || "";
    }
    const leg = me && me.leg;
    box.hidden = !leg;
    if (!leg) { body.replaceChildren(); return; }
    if (box.dataset.leg === String(leg.id) && box.dataset.state === leg.status && body.childNodes.length) return;  // keep typed notes
    box.dataset.leg = leg.id; box.dataset.state = leg.status;
    body.replaceChildren();
    const state = { ringing: "Ringing your phone…", answered: "Connected", completed: "Call ended: wrap up" }[leg.status] || leg.status;
    body.append(el("div", "ok call-state", state));
    if (me.call) { const c = el("div", "card mine"); context(me.call, c); body.append(c); }
    if (leg.status === "completed") body.append(wrapupForm(leg));
  }

  function wrapupForm(leg) {
    const f = el("form"); f.id = "wrapup-form";
    const sel = el("select"); sel.id = "disposition"; sel.required = true;
    sel.append(new Option("Choose an outcome…", ""));
    for (const d of ["resolved", "follow_up", "callback_booked", "transferred", "not_resolved", "wrong_number"]) sel.append(new Option(words(d), d));
    const notes = el("textarea"); notes.id = "notes"; notes.placeholder = "Notes for the customer's record";
    const save = el("button", "accept", "Save wrap-up");
    const msg = el("div", "error"); msg.setAttribute("role", "alert");
    const label = el("label", null, "Outcome "); label.append(sel);
    f.append(label, notes, save, msg);
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      save.disabled = true; msg.textContent = "";
      try {
        const r = await api(`/api/agent/legs/${leg.id}/wrapup`, { disposition: sel.value, notes: notes.value });
        const body = await r.json().catch(() => ({}));
        if (r.ok) { f.replaceChildren(el("div", "ok", "Saved to the customer's record.")); return refresh(); }
        msg.textContent = body.error || "The wrap-up could not be saved. Try again.";
        save.textContent = "Retry";
      } catch (e) { msg.textContent = "The desk cannot reach the server. Check your connection and retry."; save.textContent = "Retry"; }
      save.disabled = false;
    });
    return f;
  }

  function alertLine(text, cls) {
    const li = el("li", cls || "", text);
    $("alerts").prepend(li);
    while ($("alerts").children.length > 4) $("alerts").lastChild.remove();
    setTimeout(() => li.remove(), 30000);
  }

  function render() {
    const shown = items.filter((i) => !declined.has(key(i)));
    $("queue").replaceChildren(...shown.map(card));
    $("empty").hidden = shown.length > 0;
    document.title = shown.length ? `(${shown.length}) ${baseTitle}` : baseTitle;
  }

  function onMessage(msg) {
    if (!msg) return;
    if (msg.type === "alert") { alertLine(msg.text, msg.kind); return; }
    if (msg.type !== "queue") return;
    clockOffset = Date.parse(msg.now) - Date.now();
    items = msg.items || [];
    if (msg.me) me = msg.me;
    const ids = new Set(items.map(key));
    if (seen) {
      const fresh = items.filter((i) => !seen.has(key(i)) && !i.requeued);
      for (const i of fresh) alertLine(`New caller in ${i.queue}: ${i.customer_name || "unidentified caller"}, ${i.trigger_words || words(i.trigger)}`, "new-caller");
    }
    seen = ids;
    for (const k of [...errors.keys()]) if (!ids.has(k)) errors.delete(k);
    const select = $("skill"), known = new Set([...select.options].map((o) => o.value));
    for (const name of Object.keys(msg.queues || {})) if (!known.has(name)) select.append(new Option(name, name));
    renderStats(msg); renderMe(); render();
  }

  function api(path, body, method) {
    return fetch(path, {
      method: method || (body === undefined ? "GET" : "POST"),
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then((r) => { if (r.status === 401) { showLogin("Your session ended; log in again."); } return r; });
  }

  async function refresh() {
    const skill = $("skill").value;
    const r = await api(`/api/agent/queue${skill ? "?skill=" + encodeURIComponent(skill) : ""}`);
    if (r.ok) onMessage(await r.json());
  }

  async function acceptItem(item, button) {
    button.disabled = true; button.textContent = "Connecting…";
    errors.delete(key(item));
    const path = item.kind === "callback" ? "callbacks" : "escalations";
    try {
      const r = await api(`/api/agent/${path}/${item.id}/accept`, {});
      const body = await r.json().catch(() => ({}));
      if (!r.ok) errors.set(key(item), { text: body.error || "The call could not be taken. Try again.", retry: r.status >= 500 || !!body.retry });
    } catch (e) {
      errors.set(key(item), { text: "The desk cannot reach the server. Check your connection and retry.", retry: true });
    }
    await refresh().catch(() => {});
    render();
  }

  async function declineItem(item) {
    declined.add(key(item));
    render();
    await api(`/api/agent/escalations/${item.id}/decline`, {}).catch(() => {});
  }

  function setConn(live, text) { const c = $("conn"); c.className = live ? "live" : "down"; c.textContent = text; }

  async function connect() {
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    clearTimeout(retry);
    const gen = ++generation;
    const skill = $("skill").value;
    let ticket;
    try {
      // The session token never goes into a URL: trade it for a single-use ticket valid a few seconds.
      const r = await api("/api/agent/ws-ticket", {});
      if (r.status === 401) return;
      if (!r.ok) throw new Error(`ticket ${r.status}`);
      ticket = (await r.json()).ticket;
    } catch (e) {
      if (gen !== generation) return;
      setConn(false, "reconnecting…");
      retry = setTimeout(connect, 2000);
      return;
    }
    if (gen !== generation) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/api/agent/ws?ticket=${encodeURIComponent(ticket)}` + (skill ? `&skill=${encodeURIComponent(skill)}` : ""));
    ws.onopen = () => setConn(true, "live");
    ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
    ws.onclose = () => { setConn(false, "reconnecting…"); if (token) retry = setTimeout(connect, 2000); };
  }

  function showLogin(message) {
    token = ""; sessionStorage.removeItem("agentSession");
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    $("desk").hidden = true; $("login").hidden = false; $("logout").hidden = true;
    $("login-error").textContent = message || "";
    setConn(false, "logged out");
  }

  function start() {
    $("login").hidden = true; $("desk").hidden = false; $("logout").hidden = false;
    seen = null;
    refresh().catch(() => setConn(false, "cannot reach the server"));
    connect();
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const r = await fetch("/api/agent/login", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: $("login-name").value.trim(), password: $("login-password").value }),
      });
      if (!r.ok) { $("login-error").textContent = r.status === 401 ? "Wrong name or password." : "Log-in failed; try again."; return; }
      const body = await r.json();
      token = body.token; sessionStorage.setItem("agentSession", token);
      $("login-password").value = "";
      start();
    } catch (e) { $("login-error").textContent = "The desk cannot reach the server; try again."; }
  });
  $("status").addEventListener("change", async (ev) => {
    const r = await api("/api/agent/status", { status: ev.target.value });
    const body = await r.json().catch(() => ({}));
    if (r.ok) { me = body; renderMe(); render(); } else { alertLine(body.error || "Your status could not be changed. Try again."); refresh(); }
  });
  $("logout").addEventListener("click", async () => { await api("/api/agent/logout", {}).catch(() => {}); showLogin(); });
  $("skill").addEventListener("change", start);
  setInterval(() => {
    for (const w of document.querySelectorAll("#queue .wait")) {
      w.textContent = `waiting ${fmtWait(w.dataset.since)}`;
      w.className = `wait ${slaLevel(w.dataset.since, Number(w.dataset.sla))}`;
    }
  }, 1000);
  if (token) start(); else showLogin();
})();
