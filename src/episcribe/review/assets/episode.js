// The episode page: the episode's videos, its annotation lanes under them, and the edits.
// The server is the authority: every change sends the episode's whole set of correctable
// rows, and a refused change (a LeRobot resolver rule, a validator check) comes back
// with its reason and is undone here.
"use strict";

const EPISODE = Number(location.pathname.split("/").pop());
// Rows at a subtask boundary that move with it (VQA pairs stay on their frames).
const MOVES_WITH_BOUNDARY = new Set(["subtask", "plan", "memory", "interjection", null]);
let data = null;       // the server's view of the episode
let rows = [];         // the rows as last saved
let selected = null;   // {kind: "subtask", i} | {kind: "event", t, style, camera}
let dragging = null;   // {i, t} while a boundary handle is dragged
let videos = [];       // [{el, cam}]

// -- time -------------------------------------------------------------------------------
const frames = () => data.frames;
const start = () => frames()[0];
const end = () => frames()[frames().length - 1] + 1 / data.fps;

function now() {
  const main = videos[0];
  return main ? Math.max(start(), main.el.currentTime - main.cam.from) : start();
}

function frameIndexAt(t) {
  const f = frames();
  let lo = 0, hi = f.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (f[mid] <= t + 1e-4) lo = mid; else hi = mid - 1;
  }
  return lo;
}

function snap(t) {
  const f = frames(), i = frameIndexAt(t);
  return i + 1 < f.length && f[i + 1] - t < t - f[i] ? f[i + 1] : f[i];
}

function seek(t) {
  t = Math.min(Math.max(t, start()), frames()[frames().length - 1]);
  // A little past the frame's time, so the decoder shows that frame and not the one before.
  for (const v of videos) v.el.currentTime = v.cam.from + t + 0.002;
  drawPlayhead(t);
}

function togglePlay() {
  const main = videos[0].el;
  if (main.paused) { if (now() >= frames()[frames().length - 1]) seek(start()); videos.forEach(v => v.el.play()); }
  else videos.forEach(v => v.el.pause());
}

function step(frameDelta) {
  videos.forEach(v => v.el.pause());
  const f = frames();
  seek(f[Math.min(Math.max(frameIndexAt(now()) + frameDelta, 0), f.length - 1)]);
}

// -- rows -------------------------------------------------------------------------------
function subtasks(list = rows) {
  return list.filter(r => r.style === "subtask").sort((a, b) => a.timestamp - b.timestamp);
}

function currentSubtask(t = now()) {
  const s = subtasks();
  let i = 0;
  while (i + 1 < s.length && s[i + 1].timestamp <= t + 1e-6) i++;
  return i;
}

function speechText(row) {
  const call = (row.tool_calls || []).find(c => c.function && c.function.name === "say");
  if (!call) return "";
  const args = typeof call.function.arguments === "string" ? JSON.parse(call.function.arguments) : call.function.arguments;
  return args.text || "";
}

function withSpeech(row, text) {
  const calls = row.tool_calls.map(c => {
    if (!(c.function && c.function.name === "say")) return c;
    const args = typeof c.function.arguments === "string" ? JSON.parse(c.function.arguments) : c.function.arguments;
    const next = {...args, text};
    return {...c, function: {...c.function, arguments: typeof c.function.arguments === "string" ? JSON.stringify(next) : next}};
  });
  return {...row, tool_calls: calls};
}

const clone = list => list.map(r => ({...r}));

// -- edits ------------------------------------------------------------------------------
function moveBoundary(i, t) {
  const s = subtasks();
  if (i < 1 || i >= s.length) return say("the first subtask starts at the first frame", true);
  t = snap(t);
  if (!(s[i - 1].timestamp < t && (i + 1 >= s.length || t < s[i + 1].timestamp)))
    return say("a boundary stays between its neighbours; merge the subtasks instead", true);
  const old = s[i].timestamp;
  if (t === old) return render();
  save(clone(rows).map(r => (r.timestamp === old && MOVES_WITH_BOUNDARY.has(r.style) ? {...r, timestamp: t} : r)),
       `boundary ${i} moved to ${t.toFixed(3)} s`, {kind: "subtask", i});
}

function nearestBoundary(t) {
  const s = subtasks();
  let best = -1;
  for (let i = 1; i < s.length; i++)
    if (best < 0 || Math.abs(s[i].timestamp - t) < Math.abs(s[best].timestamp - t)) best = i;
  return best;
}

function split() {
  const t = snap(now()), i = currentSubtask(t), row = subtasks()[i];
  const next = clone(rows);
  next.push({...row, timestamp: t});
  save(next, `split at ${t.toFixed(3)} s`, {kind: "subtask", i: i + 1});
}

function merge() {
  const s = subtasks(), i = selected && selected.kind === "subtask" ? selected.i : currentSubtask();
  if (i + 1 >= s.length) return say("the last subtask has no next one to merge with", true);
  const t = s[i + 1].timestamp;
  save(rows.filter(r => !(r.timestamp === t && (r.style === "subtask" || r.style === "memory"))),
       `subtasks ${i} and ${i + 1} merged`, {kind: "subtask", i});
}

function setContent(match, content) {
  save(rows.map(r => (match(r) ? {...r, content} : r)), "saved");
}

function deleteVqa(t, camera) {
  save(rows.filter(r => !(r.style === "vqa" && r.timestamp === t && r.camera === camera)),
       `VQA pair at ${t.toFixed(3)} s deleted`, null);
}

async function save(next, done, select = selected, state = "corrected", note = undefined) {
  const body = {rows: next, state, note: note ?? data.review.note ?? ""};
  const response = await fetch(`/api/episodes/${EPISODE}`, {
    method: "PUT", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const answer = await response.json();
  if (!response.ok) {
    say("refused: " + answer.error, true);
    render();
    return false;
  }
  if (next) rows = next;
  data.review = answer;
  selected = select;
  say(done);
  render();
  return true;
}

function accept() { save(clone(rows), "accepted", selected, "accepted"); }

function flag() {
  const note = prompt("Why flag this episode?", data.review.note || "");
  if (note !== null) save(null, "flagged", selected, "flagged", note);
}

async function nextUnreviewed() {
  const list = (await (await fetch("/api/episodes")).json()).episodes;
  const next = list.find(e => e.state === "not reviewed" && e.episode !== EPISODE);
  if (next) location.href = "/episode/" + next.episode; else say("every episode is reviewed");
}

function say(text, error = false) {
  const el = document.getElementById("message");
  el.textContent = text;
  el.className = error ? "error" : "ok";
}

// -- drawing ----------------------------------------------------------------------------
const pct = t => ((t - start()) / (end() - start())) * 100 + "%";

function lane(name, cls) {
  const el = document.createElement("div");
  el.className = "lane " + (cls || "");
  el.innerHTML = `<div class="lane-name"></div><div class="lane-body"></div>`;
  el.firstChild.textContent = name;
  el.lastChild.addEventListener("mousedown", ev => {
    if (ev.target !== el.lastChild) return;
    const box = el.lastChild.getBoundingClientRect();
    seek(start() + ((ev.clientX - box.left) / box.width) * (end() - start()));
  });
  document.getElementById("timeline").append(el);
  return el.lastChild;
}

function tick(body, t, cls, title, onclick) {
  const el = document.createElement("div");
  el.className = "tick " + cls;
  el.style.left = pct(t);
  el.title = `${t.toFixed(3)} s: ${title}`;
  el.dataset.t = t;
  if (onclick) el.addEventListener("mousedown", ev => { ev.stopPropagation(); onclick(el); });
  body.append(el);
  return el;
}

function render() {
  const timeline = document.getElementById("timeline");
  timeline.replaceChildren();
  const s = subtasks();
  const body = lane("subtasks", "subtask");
  s.forEach((row, i) => {
    const bar = document.createElement("div");
    const until = i + 1 < s.length ? s[i + 1].timestamp : end();
    bar.className = "bar" + (selected && selected.kind === "subtask" && selected.i === i ? " selected" : "");
    bar.style.left = pct(row.timestamp);
    bar.style.width = `calc(${pct(until)} - ${pct(row.timestamp)})`;
    bar.textContent = row.content;
    bar.title = `${row.timestamp.toFixed(3)} s: ${row.content}`;
    bar.dataset.i = i;
    bar.addEventListener("mousedown", ev => { ev.stopPropagation(); selected = {kind: "subtask", i}; seek(row.timestamp); render(); });
    body.append(bar);
    if (i > 0) {
      const handle = document.createElement("div");
      handle.className = "handle";
      handle.dataset.i = i;
      handle.style.left = pct(row.timestamp);
      handle.title = "drag to move this boundary";
      handle.addEventListener("mousedown", ev => { ev.stopPropagation(); ev.preventDefault(); dragging = {i, t: row.timestamp, el: handle, body}; });
      body.append(handle);
    }
  });
  const events = (style, name, cls, pick = r => r.style === style) => {
    const b = lane(name);
    for (const r of rows.filter(pick))
      tick(b, r.timestamp, cls, r.content ?? speechText(r), () => { selected = {kind: "event", t: r.timestamp, style: r.style, camera: r.camera}; seek(r.timestamp); render(); })
        .classList.toggle("selected", !!selected && selected.kind === "event" && selected.t === r.timestamp && selected.style === r.style && selected.camera === r.camera);
  };
  if (data.styles.includes("plan")) events("plan", "plan", "plan");
  if (data.styles.includes("memory")) events("memory", "memory", "memory");
  if (data.styles.includes("interjection")) events("interjection", "interjections", "interjection");
  if (data.styles.includes("null")) events(null, "speech", "speech", r => r.style === null);
  if (data.styles.includes("vqa"))
    for (const cam of data.cameras.map(c => c.key))
      events("vqa", "VQA " + cam.split(".").pop(), "vqa", r => r.style === "vqa" && r.role === "user" && r.camera === cam);
  const motion = data.other.filter(r => r.style === "motion");
  if (motion.length) { const b = lane("motion"); motion.forEach(r => tick(b, r.timestamp, "motion", r.content)); }
  if (data.keystates.length) { const b = lane("keystates"); data.keystates.forEach(k => tick(b, k.timestamp, "keystate", k.content)); }
  const head = document.createElement("div");
  head.id = "playhead";
  timeline.append(head);
  drawPlayhead(now());
  renderPanel();
  const state = document.getElementById("state");
  state.textContent = data.review.state;
  state.className = "state " + data.review.state.replace(" ", "-");
  document.getElementById("note").textContent = data.review.note || "";
}

function drawPlayhead(t) {
  const head = document.getElementById("playhead");
  if (head) head.style.left = `calc(110px + (100% - 110px) * ${(t - start()) / (end() - start())})`;
  document.getElementById("time").textContent = `${t.toFixed(3)} s · frame ${frameIndexAt(t)} · ${subtasks()[currentSubtask(t)]?.content ?? ""}`;
}

function field(panel, label, value, onsave, id) {
  const wrap = document.createElement("label");
  wrap.textContent = label;
  const input = document.createElement("input");
  input.type = "text";
  input.value = value;
  if (id) input.id = id;
  input.addEventListener("keydown", ev => {
    if (ev.key === "Enter") { ev.preventDefault(); onsave(input.value); input.blur(); }
    if (ev.key === "Escape") { input.value = value; input.blur(); }
  });
  wrap.append(input);
  panel.append(wrap);
  return input;
}

function renderPanel() {
  const panel = document.getElementById("panel");
  panel.replaceChildren();
  if (!selected) { panel.innerHTML = "<em>Click a subtask, an interjection or a VQA tick to edit it.</em>"; return; }
  if (selected.kind === "subtask") {
    const row = subtasks()[selected.i];
    if (!row) { selected = null; return renderPanel(); }
    const heading = document.createElement("strong");
    heading.textContent = `subtask ${selected.i} from ${row.timestamp.toFixed(3)} s (Enter saves)`;
    panel.append(heading);
    const t = row.timestamp;
    field(panel, "label", row.content, v => setContent(r => r.style === "subtask" && r.timestamp === t, v), "label-input");
    const plan = rows.find(r => r.style === "plan" && r.timestamp === t);
    if (plan) field(panel, "plan from here", plan.content, v => setContent(r => r === plan, v));
    const memory = rows.find(r => r.style === "memory" && r.timestamp === t);
    if (memory) field(panel, "memory", memory.content, v => setContent(r => r === memory, v));
    return;
  }
  const t = selected.t;
  const heading = document.createElement("strong");
  heading.textContent = `${selected.style ?? "speech"} at ${t.toFixed(3)} s${selected.camera ? " · " + selected.camera : ""}`;
  panel.append(heading);
  if (selected.style === "vqa") {
    for (const r of rows.filter(r => r.style === "vqa" && r.timestamp === t && r.camera === selected.camera)) {
      const p = document.createElement("div");
      p.textContent = `${r.role}: ${r.content}`;
      panel.append(p);
    }
    const del = document.createElement("button");
    del.textContent = "delete this pair (x)";
    del.id = "delete-vqa";
    del.addEventListener("click", () => deleteVqa(t, selected.camera));
    panel.append(del);
    return;
  }
  const interjection = rows.find(r => r.style === "interjection" && r.timestamp === t);
  if (interjection) field(panel, "interjection", interjection.content, v => setContent(r => r === interjection, v), "interjection-input");
  const speech = rows.find(r => r.style === null && r.timestamp === t);
  if (speech) field(panel, "the robot says", speechText(speech), v => save(rows.map(r => (r === speech ? withSpeech(r, v) : r)), "reply saved"), "reply-input");
  const other = rows.find(r => r.style === selected.style && r.style !== "interjection" && r.style !== null && r.timestamp === t);
  if (other) field(panel, selected.style, other.content, v => setContent(r => r === other, v));
}

// -- start ------------------------------------------------------------------------------
document.addEventListener("mousemove", ev => {
  if (!dragging) return;
  const box = dragging.body.getBoundingClientRect();
  dragging.t = snap(start() + ((ev.clientX - box.left) / box.width) * (end() - start()));
  dragging.el.style.left = pct(dragging.t);
  seek(dragging.t);
});
document.addEventListener("mouseup", () => {
  if (!dragging) return;
  const {i, t} = dragging;
  dragging = null;
  moveBoundary(i, t);
});

document.addEventListener("keydown", ev => {
  if (!data || ["INPUT", "TEXTAREA"].includes(ev.target.tagName)) return;
  const s = subtasks(), t = now();
  const keys = {
    " ": togglePlay, ",": () => step(-1), ".": () => step(1),
    ArrowLeft: () => (ev.shiftKey ? seek(t - 1) : step(-1)), ArrowRight: () => (ev.shiftKey ? seek(t + 1) : step(1)),
    "[": () => { const b = s.filter(r => r.timestamp < t - 1e-4).pop(); if (b) seek(b.timestamp); },
    "]": () => { const b = s.find(r => r.timestamp > t + 1e-4); if (b) seek(b.timestamp); },
    b: () => { const i = nearestBoundary(t); if (i > 0) moveBoundary(i, t); },
    s: split, m: merge,
    e: () => { selected = {kind: "subtask", i: currentSubtask()}; render(); document.getElementById("label-input").focus(); },
    x: () => { if (selected && selected.style === "vqa") deleteVqa(selected.t, selected.camera); },
    Delete: () => { if (selected && selected.style === "vqa") deleteVqa(selected.t, selected.camera); },
    a: accept, f: flag, n: nextUnreviewed,
    N: () => { if (data.next !== null) location.href = "/episode/" + data.next; },
    P: () => { if (data.previous !== null) location.href = "/episode/" + data.previous; },
  };
  const action = keys[ev.key];
  if (action) { ev.preventDefault(); action(); }
});

async function load() {
  const response = await fetch(`/api/episodes/${EPISODE}`);
  data = await response.json();
  if (!response.ok) return say(data.error, true);
  rows = data.rows;
  document.getElementById("episode").textContent = EPISODE;
  document.getElementById("task").textContent = data.task;
  document.title = `episode ${EPISODE} · episcribe review`;
  for (const [id, target] of [["previous", data.previous], ["next", data.next]]) {
    const a = document.getElementById(id);
    if (target === null) a.removeAttribute("href"); else a.href = "/episode/" + target;
  }
  const box = document.getElementById("videos");
  for (const cam of data.cameras) {
    const fig = document.createElement("figure");
    const el = document.createElement("video");
    el.src = `/video/${EPISODE}/${encodeURIComponent(cam.key)}`;
    el.muted = true;
    el.preload = "auto";
    el.dataset.camera = cam.key;
    const caption = document.createElement("figcaption");
    caption.textContent = cam.key;
    fig.append(el, caption);
    box.append(fig);
    videos.push({el, cam});
    el.addEventListener("loadedmetadata", () => { el.currentTime = cam.from + start() + 0.002; }, {once: true});
  }
  document.getElementById("accept").addEventListener("click", accept);
  document.getElementById("flag").addEventListener("click", flag);
  document.getElementById("next-unreviewed").addEventListener("click", nextUnreviewed);
  render();
  // The playhead follows playback; playback stops at the episode's end (the file goes on
  // with the next episode), and the other cameras follow the first.
  const follow = () => {
    const t = now(), last = frames()[frames().length - 1];
    if (!videos[0].el.paused && t >= last) { videos.forEach(v => v.el.pause()); seek(last); }
    for (const v of videos.slice(1))
      if (Math.abs(v.el.currentTime - v.cam.from - t) > 0.1) v.el.currentTime = v.cam.from + t;
    if (!dragging) drawPlayhead(Math.min(t, last));
    requestAnimationFrame(follow);
  };
  requestAnimationFrame(follow);
  document.body.dataset.loaded = "1";
}
load();
