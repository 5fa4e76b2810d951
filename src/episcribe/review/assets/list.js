// The episode list: filter, open, and jump to the next unreviewed episode.
"use strict";
let episodes = [];

function stateClass(state) { return "state " + state.replace(" ", "-"); }

function render() {
  const text = document.getElementById("filter").value.toLowerCase();
  const state = document.getElementById("state-filter").value;
  const body = document.getElementById("episodes");
  body.replaceChildren();
  for (const e of episodes) {
    if (state && e.state !== state) continue;
    if (text && !(e.task.toLowerCase().includes(text) || String(e.episode) === text)) continue;
    const tr = document.createElement("tr");
    tr.dataset.episode = e.episode;
    const cells = [e.episode, e.task, e.duration.toFixed(1) + " s", e.subtasks, e.failed || "", e.snaps || ""];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    const link = document.createElement("a");
    link.href = "/episode/" + e.episode;
    link.textContent = e.episode;
    tr.cells[0].replaceChildren(link);
    const badge = document.createElement("span");
    badge.className = stateClass(e.state);
    badge.textContent = e.state;
    const stateCell = document.createElement("td");
    stateCell.append(badge);
    const note = document.createElement("td");
    note.textContent = e.note || "";
    tr.append(stateCell, note);
    tr.addEventListener("click", () => { location.href = "/episode/" + e.episode; });
    body.append(tr);
  }
  const reviewed = episodes.filter(e => e.state !== "not reviewed").length;
  document.getElementById("counts").textContent = `${reviewed} of ${episodes.length} reviewed`;
}

function nextUnreviewed() {
  const next = episodes.find(e => e.state === "not reviewed");
  if (next) location.href = "/episode/" + next.episode;
}

async function load() {
  const response = await fetch("/api/episodes");
  const data = await response.json();
  episodes = data.episodes;
  document.getElementById("dataset").textContent = data.dataset;
  document.title = "episcribe review · " + data.dataset;
  render();
  document.body.dataset.loaded = "1";
}

document.getElementById("filter").addEventListener("input", render);
document.getElementById("state-filter").addEventListener("change", render);
document.getElementById("next-unreviewed").addEventListener("click", nextUnreviewed);
document.addEventListener("keydown", ev => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  if (ev.key === "n") nextUnreviewed();
  if (ev.key === "/") { ev.preventDefault(); document.getElementById("filter").focus(); }
});
load();
