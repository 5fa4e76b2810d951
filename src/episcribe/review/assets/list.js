// The episode list: filter, open, and jump to the next unreviewed episode.
"use strict";
let episodes = [];

function stateClass(state) { return "state " + state.replace(" ", "-"); }

const escape = text => String(text).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);

// One innerHTML for the whole table: a thousand rows built node by node took most of a
// second in a loaded browser (bench/README.md).
function render() {
  const text = document.getElementById("filter").value.toLowerCase();
  const state = document.getElementById("state-filter").value;
  const shown = episodes.filter(e => (!state || e.state === state) &&
    (!text || e.task.toLowerCase().includes(text) || String(e.episode) === text));
  document.getElementById("episodes").innerHTML = shown.map(e => `<tr data-episode="${e.episode}">
    <td><a href="/episode/${e.episode}">${e.episode}</a></td><td>${escape(e.task)}</td>
    <td>${e.duration.toFixed(1)} s</td><td>${e.subtasks}</td><td>${e.failed || ""}</td>
    <td>${e.snaps || ""}</td><td><span class="${stateClass(e.state)}">${e.state}</span></td>
    <td>${escape(e.note || "")}</td></tr>`).join("");
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

document.getElementById("episodes").addEventListener("click", ev => {
  const row = ev.target.closest("tr");
  if (row && ev.target.tagName !== "A") location.href = "/episode/" + row.dataset.episode;
});
document.getElementById("filter").addEventListener("input", render);
document.getElementById("state-filter").addEventListener("change", render);
document.getElementById("next-unreviewed").addEventListener("click", nextUnreviewed);
document.addEventListener("keydown", ev => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  if (ev.key === "n") nextUnreviewed();
  if (ev.key === "/") { ev.preventDefault(); document.getElementById("filter").focus(); }
});
load();
