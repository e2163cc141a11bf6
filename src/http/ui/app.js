// invariantd's page: approve, reject and explain, with the bearer token entered once per
// browser session (sessionStorage, sent as a header, never a cookie).
"use strict";

const KEY = "invariantd-token";

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
  const r = await fetch(url, { method: "POST", headers: h, body: JSON.stringify(body) });
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

async function decide(button) {
  const card = button.closest(".card");
  const out = card.querySelector(".result");
  const comment = card.querySelector("input.comment");
  const choice = card.querySelector("select.action");
  const body = { comment: comment && comment.value ? comment.value : null };
  if (button.dataset.act === "approve" && choice && choice.value !== choice.dataset.planned) {
    body.action = choice.value;
  }
  const url = `/api/v1/repairs/${encodeURIComponent(button.dataset.id)}/${button.dataset.act}`;
  const answer = await send(url, body, out);
  if (answer) {
    out.textContent = `${answer.state}${answer.approved_by ? " by " + answer.approved_by : ""}`;
    out.dataset.state = answer.state;
  }
}

async function approveRule(button) {
  const out = button.parentElement.querySelector(".result");
  const url = `/api/v1/rules/${encodeURIComponent(button.dataset.rule)}/repairs/approve`;
  const answer = await send(url, {}, out);
  if (answer) {
    const refused = answer.refused || [];
    out.textContent = `${(answer.approved || []).length} approved` +
      (refused.length ? `, ${refused.length} not: ${refused[0].error}` : "");
  }
}

async function explain(button) {
  const target = document.getElementById(button.dataset.target);
  target.textContent = "judging now…";
  const r = await fetch(button.dataset.url, { headers: headers(false) });
  // The fragment is rendered by the server, every value escaped.
  if (r.ok) target.innerHTML = await r.text();
  else target.textContent = `could not explain (${r.status})`;
}

// With `auth.read: token` the page comes empty: its content is fetched with the token.
async function load() {
  const main = document.getElementById("content");
  if (!main || !main.dataset.needsToken) return;
  const h = headers(true);
  if (!h.Authorization) return;
  const r = await fetch("/ui/content", { headers: h });
  if (r.status === 401) { sessionStorage.removeItem(KEY); showToken(); return; }
  // Rendered by the server, every value escaped.
  if (r.ok) main.innerHTML = await r.text();
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  if (b.dataset.act === "explain") explain(b);
  else if (b.dataset.act === "approve-rule") approveRule(b);
  else if (b.dataset.act === "token") { sessionStorage.removeItem(KEY); token(true); load(); }
  else decide(b);
});

showToken();
load();
