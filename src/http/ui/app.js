// invariantd's page: approve, reject and explain, with the bearer token entered once per
// browser session (sessionStorage, sent as a header, never a cookie). Every piece of HTML it
// inserts was rendered by the server with each value escaped; what it writes itself is text.
"use strict";

const KEY = "invariantd-token";
// The states a repair ends in: the card stops following it there.
const FINAL = ["applied", "failed", "rejected", "skipped", "needs_manual"];
// What decides a repair on its card (explaining stays possible).
const DECIDING = "button[data-act=approve], button[data-act=reject], select, input";

function showToken() {
  const el = document.getElementById("token-state");
  if (!el) return;
  el.textContent = sessionStorage.getItem(KEY) ? "token set for this session" : "no token yet";
}

function token(ask) {
  let t = sessionStorage.getItem(KEY);
  if (!t && ask) {
    t = window.prompt("Your bearer token (from auth.tokens_file), kept for this browser session:");
    if (t) sessionStorage.setItem(KEY, t.trim());
  }
  showToken();
  return t ? t.trim() : null;
}

function headers(ask) {
  const h = { "Content-Type": "application/json" };
  const t = token(ask);
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

// Sends a decision; returns the answer's JSON, or says why not in `out`.
async function send(url, body, out) {
  const h = headers(true);
  if (!h.Authorization) {
    out.textContent = "a token is needed to decide";
    return null;
  }
  let r;
  try {
    r = await fetch(url, { method: "POST", headers: h, body: JSON.stringify(body) });
  } catch (e) {
    out.textContent = "the daemon did not answer: " + e;
    return null;
  }
  const answer = await r.json().catch(() => ({}));
  if (r.status === 401) sessionStorage.removeItem(KEY);
  showToken();
  if (!r.ok) {
    out.textContent = `refused (${r.status}): ${answer.error || ""}`;
    out.dataset.state = "refused";
    return null;
  }
  return answer;
}

// Who decided, as the card says it.
function decider(repair) {
  if (repair.rejected_by) return "rejected by " + repair.rejected_by;
  if (repair.approved_by && (repair.state === "pending" || repair.state === "dry_run")) {
    return "approved once by " + repair.approved_by;
  }
  return repair.approved_by ? "approved by " + repair.approved_by : "";
}

// Shows `repair` (as the API answers it) on its card: its state, who decided, and its result.
function show(card, repair) {
  const state = card.querySelector(".state");
  state.textContent = repair.state;
  state.dataset.state = repair.state;
  const who = decider(repair);
  card.querySelector(".decider").textContent = who ? " · " + who : "";
  const outcome = card.querySelector(".outcome");
  if (outcome) outcome.textContent = repair.result || "";
  const out = card.querySelector(".result");
  out.dataset.state = repair.state;
  if (repair.state === "rejected") out.textContent = who;
  else if (FINAL.includes(repair.state)) {
    out.textContent = repair.state + (repair.result ? ": " + repair.result : "");
  } else out.textContent = who || repair.state;
  // Once decided, nothing on the card can be pressed again.
  if (repair.state !== "pending" && repair.state !== "dry_run") {
    card.querySelectorAll(DECIDING).forEach((el) => { el.disabled = true; });
  }
}

// Follows a decided repair until it ends (applied, failed with the reason, …), without a
// reload; gives up after two minutes, saying so.
async function follow(card, id) {
  const until = Date.now() + 120000;
  while (Date.now() < until) {
    await new Promise((done) => setTimeout(done, 1000));
    const r = await fetch(`/api/v1/repairs/${encodeURIComponent(id)}`, { headers: headers(false) })
      .catch(() => null);
    if (!r || !r.ok) continue;
    const repair = await r.json();
    show(card, repair);
    if (FINAL.includes(repair.state)) return;
  }
  card.querySelector(".result").textContent += " (still going: reload to see more)";
}

async function decide(button) {
  const card = button.closest(".card");
  const out = card.querySelector(".result");
  const comment = card.querySelector("input.comment");
  const choice = card.querySelector("select.action");
  const body = { comment: comment && comment.value ? comment.value : null };
  if (button.dataset.act === "approve" && choice && choice.value !== choice.dataset.planned) {
    body.action = choice.value;
  }
  const buttons = card.querySelectorAll(DECIDING);
  // In flight: neither button can be pressed again.
  buttons.forEach((b) => { b.disabled = true; });
  out.textContent = button.dataset.act === "approve" ? "approving…" : "rejecting…";
  const url = `/api/v1/repairs/${encodeURIComponent(button.dataset.id)}/${button.dataset.act}`;
  const answer = await send(url, body, out);
  if (!answer) {
    buttons.forEach((b) => { b.disabled = false; });
    return;
  }
  show(card, answer);
  if (answer.state === "pending" || answer.state === "dry_run") {
    // Four eyes: approved once, waiting for a second person; this person is done with it.
    card.querySelectorAll(DECIDING).forEach((b) => { b.disabled = true; });
    return;
  }
  if (!FINAL.includes(answer.state)) follow(card, answer.id);
}

async function approveRule(button) {
  const out = button.parentElement.querySelector(".result");
  const rule = button.dataset.rule;
  const risk = button.dataset.risk ? `, with ${button.dataset.risk} at risk` : "";
  if (!window.confirm(`Approve all ${button.dataset.count} waiting repairs of ${rule}${risk}?`)) {
    out.textContent = "nothing approved";
    return;
  }
  button.disabled = true;
  out.textContent = "approving…";
  const url = `/api/v1/rules/${encodeURIComponent(rule)}/repairs/approve`;
  const answer = await send(url, {}, out);
  if (!answer) {
    button.disabled = false;
    return;
  }
  const approved = answer.approved || [];
  const refused = answer.refused || [];
  out.textContent = `${approved.length} approved` +
    (refused.length ? `, ${refused.length} not: ${refused[0].error}` : "");
  for (const id of approved) {
    const card = document.getElementById("repair-" + id);
    if (!card) continue;
    card.querySelectorAll(DECIDING).forEach((b) => { b.disabled = true; });
    card.querySelector(".result").textContent = "approved";
    follow(card, id);
  }
}

async function explain(button) {
  const target = document.getElementById(button.dataset.target);
  button.disabled = true;
  target.textContent = "judging now…";
  const r = await fetch(button.dataset.url, { headers: headers(false) }).catch(() => null);
  button.disabled = false;
  // The fragment is rendered by the server, every value escaped.
  if (r && r.ok) target.innerHTML = await r.text();
  else target.textContent = `could not explain (${r ? r.status : "no answer"})`;
}

// With `auth.read: token` the page comes empty: its content is fetched with the token.
async function load() {
  const main = document.getElementById("content");
  if (!main || !main.dataset.needsToken) return;
  const h = headers(true);
  if (!h.Authorization) return;
  const r = await fetch(main.dataset.content, { headers: h });
  if (r.status === 401) { sessionStorage.removeItem(KEY); showToken(); return; }
  // Rendered by the server, every value escaped.
  if (r.ok || r.status === 404) main.innerHTML = await r.text();
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-act]");
  if (!b || b.disabled) return;
  if (b.dataset.act === "explain") explain(b);
  else if (b.dataset.act === "approve-rule") approveRule(b);
  else if (b.dataset.act === "token") { sessionStorage.removeItem(KEY); token(true); load(); }
  else decide(b);
});

showToken();
load();
