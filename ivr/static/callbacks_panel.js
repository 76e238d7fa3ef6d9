// The desk's callback list: every booked callback and where it stands (booked, dialling, no answer, done,
// cancelled). A separate script so the desk page only needs a <section id="callbacks"> and one <script> tag.
// It reads GET /api/callbacks with the logged-in agent's desk session (the one agent.js keeps for this tab).
(() => {
  "use strict";
  const REFRESH_MS = 15000;
  const section = document.getElementById("callbacks") || document.body.appendChild(document.createElement("section"));
  section.id = "callbacks";

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  };

  function render(list) {
    const rows = list.map((cb) => {
      const tries = cb.call_attempts ? `${cb.call_attempts} of ${cb.max_call_attempts}` : "";
      return el(
        "tr",
        { "data-status": cb.status },
        el("td", {}, cb.when || "not booked yet"),
        el("td", {}, el("span", { class: `state s-${cb.status}` }, cb.state)),
        el("td", {}, [cb.customer_id, cb.phone].filter(Boolean).join(" · ")),
        el("td", {}, cb.queue),
        el("td", {}, cb.reason || ""),
        el("td", {}, tries),
      );
    });
    const table = el(
      "table",
      { class: "callbacks" },
      el("thead", {}, el("tr", {}, ...["When", "State", "Customer", "Queue", "Reason", "Calls"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows),
    );
    section.replaceChildren(
      el("h2", {}, `Callbacks (${list.filter((c) => c.status === "booked" || c.status === "no_answer").length} to make)`),
      list.length ? table : el("p", { class: "none" }, "No callbacks booked."),
    );
  }

  async function refresh() {
    const token = sessionStorage.getItem("agentSession") || "";
    if (!token) return;
    try {
      const r = await fetch("/api/callbacks", { headers: { Authorization: `Bearer ${token}` } });
      if (!r.ok) throw new Error(r.status === 401 ? "the desk token was refused" : `the server answered ${r.status}`);
      render((await r.json()).callbacks);
    } catch (err) {
      section.replaceChildren(el("h2", {}, "Callbacks"), el("p", { class: "err" }, `Cannot load callbacks: ${err.message}.`));
    }
  }

  const style = el("style", {}, `
    #callbacks { padding: 0 1rem 1rem; }
    #callbacks h2 { font-size: 1rem; }
    table.callbacks { border-collapse: collapse; width: 100%; background: #fff; font-size: .9rem; }
    table.callbacks th, table.callbacks td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e5ea; }
    .state { padding: .05rem .45rem; border-radius: .6rem; background: #e8ebf2; }
    .s-dialling { background: #fff1c2; } .s-no_answer { background: #ffd9d9; } .s-done { background: #d8f2d8; }
    .s-cancelled { color: #777; }
  `);
  document.head.append(style);
  refresh();
  setInterval(refresh, REFRESH_MS);
  // Logging in (or out) on the desk changes the session: show the list at once, not at the next refresh.
  let session = sessionStorage.getItem("agentSession") || "";
  setInterval(() => {
    const now = sessionStorage.getItem("agentSession") || "";
    if (now !== session) { session = now; refresh(); }
  }, 500);
})();
