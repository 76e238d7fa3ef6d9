// Agent desk: live queue over a WebSocket, full caller context per card, Accept transfers the call.
// No build step; all data goes into the page through textContent (never innerHTML).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  // A link may carry the token in the fragment (#token=..., never sent to the server) or, for old links,
  // the query string (the server's access log redacts it). Either way it leaves the address bar at once.
  const fragment = new URLSearchParams(location.hash.slice(1));
  let token = fragment.get("token") || params.get("token") || sessionStorage.getItem("agentToken") || "";
  if (params.has("token") || fragment.has("token")) {
    sessionStorage.setItem("agentToken", token);
    params.delete("token");
    // Keep the token out of the address bar, history and anything copied from it.
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }
  const agentInput = $("agent");
  agentInput.value = localStorage.getItem("agentName") || "";
  agentInput.addEventListener("change", () => localStorage.setItem("agentName", agentInput.value.trim()));
  const skillSelect = $("skill");
  if (params.get("skill")) {
    skillSelect.append(new Option(params.get("skill"), params.get("skill")));
    skillSelect.value = params.get("skill");
  }
  let clockOffset = 0;  // server time minus browser time, so waiting times match the server
  let items = [];
  const handled = [];
  let ws = null;
  let retry = null;
  let generation = 0;  // a newer connect() supersedes one still waiting for its ticket

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmtWait(since) {
    const s = Math.max(0, Math.round((Date.now() + clockOffset - Date.parse(since)) / 1000));
    const m = Math.floor(s / 60);
    return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : `${m}:${String(s % 60).padStart(2, "0")}`;
  }

  function fmtValue(v) {
    if (v === null || v === undefined || v === "") return "—";
    if (Array.isArray(v)) return v.map((x) => (typeof x === "number" ? x.toFixed(2) : fmtValue(x))).join(" → ");
    if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}: ${fmtValue(x)}`).join(", ");
    return String(v);
  }

  function fmtMessage(m) {
    if (typeof m === "string") return m;
    if (m && typeof m === "object") {
      const who = m.role || m.speaker || m.channel || m.from || "";
      const text = m.text || m.content || m.message || JSON.stringify(m);
      return who ? `${who}: ${text}` : text;
    }
    return String(m);
  }

  function card(item, outcome) {
    const c = el("article", "card");
    c.id = `item-${item.kind}-${item.id}`;
    c.dataset.kind = item.kind;
    c.dataset.id = item.id;
    if (item.priority >= 70) c.classList.add("p-high"); else if (item.priority >= 40) c.classList.add("p-mid");
    const title = item.kind === "callback" ? "Callback: " : "";
    c.append(el("h2", "reason", title + item.reason));
    const meta = el("div", "meta");
    meta.append(el("span", "trigger", `trigger: ${item.trigger}`), el("span", "queue", `queue: ${item.queue}`),
      el("span", "priority", `priority: ${item.priority}`));
    const wait = el("span", "waiting", `waiting ${fmtWait(item.since)}`);
    wait.dataset.since = item.since;
    if (!outcome) meta.append(wait);
    c.append(meta);
    const dl = el("dl");
    const conf = item.confidence === null || item.confidence === undefined ? "" : ` (${Math.round(item.confidence * 100)}%)`;
    const rows = [
      ["Customer", item.customer_id], ["Tier", item.customer_tier],
      ["Lifetime value", item.lifetime_value === null || item.lifetime_value === undefined ? null
        : Number(item.lifetime_value).toLocaleString(undefined, { style: "currency", currency: "USD" })],
      ["Sentiment", item.sentiment_trend], ["Intent", item.intent_guess ? item.intent_guess + conf : null],
      ["History", item.issue_history], ["Offer", item.goodwill_offer], ["Channel", item.preferred_channel],
    ];
    if (item.kind === "callback") rows.unshift(["Phone", item.phone]);
    for (const [k, v] of rows) {
      if (k === "Offer" && !v) continue;
      dl.append(el("dt", null, k), el("dd", "f-" + k.toLowerCase().replace(/ /g, "-"), fmtValue(v)));
    }
    c.append(dl);
    if (Array.isArray(item.last_3_messages) && item.last_3_messages.length) {
      const ol = el("ol", "msgs");
      for (const m of item.last_3_messages) ol.append(el("li", null, fmtMessage(m)));
      c.append(el("div", "meta", "Last messages"), ol);
    }
    if (outcome) {
      c.classList.add("done");
      c.append(el("div", "outcome " + (outcome.ok ? "ok" : "err"), outcome.text));
    } else {
      const b = el("button", "accept", item.kind === "callback" ? "Accept callback" : "Accept");
      b.addEventListener("click", () => accept(item, b));
      c.append(b);
    }
    return c;
  }

  function render() {
    const q = $("queue");
    q.replaceChildren(...items.map((i) => card(i)));
    $("empty").hidden = items.length > 0;
    $("handled-section").hidden = handled.length === 0;
    $("handled").replaceChildren(...handled.map(([i, o]) => card(i, o)));
  }

  function onSnapshot(snap) {
    if (!snap || snap.type !== "queue") return;
    clockOffset = Date.parse(snap.now) - Date.now();
    items = snap.items || [];
    const known = new Set([...skillSelect.options].map((o) => o.value));
    for (const name of Object.keys(snap.queues || {})) {
      if (!known.has(name)) skillSelect.append(new Option(name, name));
    }
    $("counts").textContent = `${items.length} waiting`;
    render();
  }

  function headers() {
    return { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  }

  function needToken() {
    sessionStorage.removeItem("agentToken");
    $("auth").hidden = false;
    setConn(false, "token needed");
  }

  async function load() {
    const skill = skillSelect.value;
    const r = await fetch(`/api/agent/queue${skill ? "?skill=" + encodeURIComponent(skill) : ""}`, { headers: headers() });
    if (r.status === 401) return needToken();
    if (r.ok) onSnapshot(await r.json());
  }

  async function accept(item, button) {
    const agent = agentInput.value.trim() || "agent";
    button.disabled = true;
    button.textContent = "Connecting…";
    const path = item.kind === "callback" ? "callbacks" : "escalations";
    let outcome;
    try {
      const r = await fetch(`/api/agent/${path}/${item.id}/accept`, {
        method: "POST", headers: headers(), body: JSON.stringify({ agent }),
      });
      const body = await r.json().catch(() => ({}));
      if (r.ok) {
        outcome = item.kind === "callback"
          ? { ok: true, text: `Yours: call the customer back on ${item.phone}` }
          : { ok: true, text: `Transferred to ${agent}: the call is ringing your line` };
      } else if (r.status === 409) {
        outcome = { ok: false, text: "Already taken by another agent" };
      } else if (r.status === 401) {
        return needToken();
      } else {
        outcome = { ok: false, text: body.error || `Failed (${r.status})` };
      }
    } catch (e) {
      outcome = { ok: false, text: `Network error: ${e}` };
    }
    handled.unshift([item, outcome]);
    items = items.filter((i) => !(i.kind === item.kind && i.id === item.id));
    render();
  }

  function setConn(live, text) {
    const c = $("conn");
    c.className = live ? "live" : "down";
    c.textContent = text;
  }

  async function connect() {
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    clearTimeout(retry);
    const gen = ++generation;
    const skill = skillSelect.value;
    // The token never goes into a URL: trade it (in the Authorization header) for a single-use ticket
    // that is valid for a few seconds, and open the socket with that.
    let ticket;
    try {
      const r = await fetch("/api/agent/ws-ticket", { method: "POST", headers: headers() });
      if (r.status === 401) return needToken();
      if (!r.ok) throw new Error(`ticket: ${r.status}`);
      ticket = (await r.json()).ticket;
    } catch (e) {
      if (gen !== generation) return;
      setConn(false, "reconnecting…");
      if ($("auth").hidden) retry = setTimeout(connect, 3000);
      return;
    }
    if (gen !== generation) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${proto}//${location.host}/api/agent/ws?ticket=${encodeURIComponent(ticket)}` +
      (skill ? `&skill=${encodeURIComponent(skill)}` : "");
    ws = new WebSocket(url);
    ws.onopen = () => setConn(true, "live");
    ws.onmessage = (ev) => onSnapshot(JSON.parse(ev.data));
    ws.onclose = () => {
      setConn(false, "reconnecting…");
      // A refused upgrade (wrong token) shows up as a close; the REST call tells us which it was.
      load().catch(() => {});
      if ($("auth").hidden) retry = setTimeout(connect, 3000);
    };
  }

  function start() {
    $("auth").hidden = true;
    load().catch((e) => setConn(false, `error: ${e}`));
    connect();
  }

  $("auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("agentToken", token);
    start();
  });
  skillSelect.addEventListener("change", start);
  setInterval(() => {
    for (const w of document.querySelectorAll("#queue .waiting")) w.textContent = `waiting ${fmtWait(w.dataset.since)}`;
  }, 1000);
  if (token) start(); else needToken();
})();
