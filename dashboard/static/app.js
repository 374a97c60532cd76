'use strict';
const COLOURS = {angry: '#d62728', disgust: '#8c564b', fear: '#9467bd', happy: '#2ca02c', neutral: '#9a9a9a',
                 sad: '#1f77b4', surprise: '#ff7f0e'};
const WINDOW_S = 30;
const MAX_STEP_S = 0.5;
const ui = {emotions: [], cameras: new Map(), points: 0, framesShown: 0};
window.ferDashboard = ui;

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

// A dashboard started with a token is opened as /?token=...: the API calls carry it.
const TOKEN = new URLSearchParams(location.search).get('token');
const FETCH = {cache: 'no-store', headers: TOKEN ? {Authorization: 'Bearer ' + TOKEN} : {}};

async function getJSON(url) {
  const r = await fetch(url, FETCH);
  if (!r.ok) throw new Error(url + ': ' + r.status);
  return r.json();
}

async function discover() {
  try {
    const d = await getJSON('/api/cameras');
    ui.emotions = d.emotions;
    const legend = document.getElementById('legend');
    if (!legend.childElementCount) {
      for (const e of d.emotions) {
        const i = el('i'); i.style.background = COLOURS[e] || '#fff';
        legend.append(el('span', {}, i, e));
      }
    }
    for (const cam of d.cameras) if (!ui.cameras.has(cam)) addCamera(cam);
  } catch (e) { /* retried on the next tick */ }
}

function addCamera(cam) {
  const caption = el('span', {className: 'frameno', textContent: 'waiting for frames'});
  const img = el('img', {alt: 'camera ' + cam});
  const charts = el('div', {className: 'charts'});
  const section = el('div', {className: 'camera'}, el('h2', {}, el('span', {textContent: cam}), caption), img, charts);
  section.dataset.camera = cam;
  document.getElementById('cameras').append(section);
  ui.cameras.set(cam, {section, img, caption, charts, canvases: new Map(), busy: false, url: null});
}

async function refreshFrame(cam, c) {
  if (c.busy) return;
  c.busy = true;
  try {
    const r = await fetch('/api/frame/' + encodeURIComponent(cam), FETCH);
    if (!r.ok) return;
    const index = r.headers.get('X-Frame-Index');
    const blob = await r.blob();
    const url = URL.createObjectURL(blob);
    c.img.onload = () => { if (c.url && c.url !== url) URL.revokeObjectURL(c.url); c.url = url; };
    c.img.src = url;
    if (c.section.dataset.frameIndex !== index) ui.framesShown += 1;
    c.section.dataset.frameIndex = index;
    c.caption.textContent = 'frame ' + index + ' \u00b7 ' + r.headers.get('X-Faces') + ' faces';
  } catch (e) { /* next tick */ } finally { c.busy = false; }
}

function drawTrack(canvas, points, t1) {
  // One shared time axis per camera (t1: its newest label); each label is a bar as wide as
  // the time until the track's next label (at most MAX_STEP_S), as tall as its confidence.
  const w = canvas.width = canvas.clientWidth || 480, h = canvas.height = 60;
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, w, h);
  g.strokeStyle = '#2a313a';
  for (const y of [0.25, 0.5, 0.75]) { g.beginPath(); g.moveTo(0, h * y); g.lineTo(w, h * y); g.stroke(); }
  const t0 = t1 - WINDOW_S, px = w / WINDOW_S;
  points.forEach(([t, e, conf], i) => {
    const next = i + 1 < points.length ? points[i + 1][0] : t + 1 / 30;
    const width = Math.max(2, Math.min(next - t, MAX_STEP_S) * px);
    g.fillStyle = COLOURS[ui.emotions[e]] || '#fff';
    g.fillRect((t - t0) * px, h - conf * h, width, conf * h);
  });
  canvas.dataset.points = String(points.length);
}

async function refreshCharts(cam, c) {
  try {
    const d = await getJSON('/api/tracks/' + encodeURIComponent(cam) + '?seconds=' + WINDOW_S);
    let total = 0;
    const t1 = Math.max(0, ...Object.values(d.tracks).map((p) => p[p.length - 1][0]));
    for (const [track, points] of Object.entries(d.tracks)) {
      let canvas = c.canvases.get(track);
      if (!canvas) {
        canvas = el('canvas');
        canvas.dataset.track = track;
        c.charts.append(el('div', {className: 'track'}, el('span', {textContent: 'track #' + track}), canvas));
        c.canvases.set(track, canvas);
      }
      drawTrack(canvas, points, t1);
      total += points.length;
    }
    for (const [track, canvas] of c.canvases) {
      if (!(track in d.tracks)) { canvas.parentElement.remove(); c.canvases.delete(track); }
    }
    c.points = total;
    ui.points = [...ui.cameras.values()].reduce((s, x) => s + (x.points || 0), 0);
  } catch (e) { /* next tick */ }
}

function row(tbody, cells) {
  tbody.append(el('tr', {}, ...cells.map((v) => el('td', {textContent: String(v)}))));
}

async function refreshStatus() {
  try {
    const s = await getJSON('/api/status');
    const alive = ['producer', 'worker', 'logger', 'display'].map((r) => r + ' ' + (s.alive[r] || 0)).join('  ');
    document.getElementById('headline').textContent = s.broker + '  prefix ' + s.prefix + '  \u00b7  ' + alive;
    const health = document.querySelector('#health tbody');
    health.replaceChildren();
    row(health, ['labels/s', s.labels_per_s]);
    row(health, ['workers alive', s.alive.worker || 0]);
    row(health, ['dead letters', s.dead_letters]);
    row(health, ['crops dropped', s.crops_dropped]);
    // Streams nobody consumes (frames while no display runs) are trimmed by design: not counted.
    const consumed = new Set(s.groups.map((g) => g.stream));
    row(health, ['trimmed unread', Object.entries(s.trimmed_unread)
      .filter(([k]) => consumed.has(k)).reduce((a, [, v]) => a + v, 0)]);
    const groups = document.querySelector('#groups tbody');
    groups.replaceChildren();
    for (const g of s.groups) row(groups, [g.stream, s.streams[g.stream] || 0, g.group, g.lag, g.pending]);
    const problems = document.getElementById('problems');
    problems.replaceChildren(...s.problems.map((p) => el('li', {textContent: p})));
    document.body.dataset.status = 'ok';
  } catch (e) {
    document.getElementById('headline').textContent = 'cannot reach the pipeline: ' + e.message;
    document.body.dataset.status = 'error';
  }
}

function tick() { for (const [cam, c] of ui.cameras) refreshFrame(cam, c); }
function slowTick() { for (const [cam, c] of ui.cameras) refreshCharts(cam, c); refreshStatus(); }

discover().then(() => { tick(); slowTick(); });
setInterval(discover, 3000);
setInterval(tick, 200);
setInterval(slowTick, 1000);
