'use strict';
// The dashboard page: one MJPEG <img> per camera, one uPlot chart per live track, the ended
// tracks, and the pipeline's health; and, above all of it, whether what it shows is live.
const WINDOW_S = 60; // seconds of each chart, at most
const MIN_SPAN_S = 10; // ... and at least: a camera's charts span its live tracks' time, so short tracks fill them
const GAP_S = 1.0; // a track unlabelled this long is drawn with a gap, not a line across
const MAX_STREAMS = 4; // a browser opens ~6 connections per host: the rest poll a JPEG each second
const STREAM_FPS = 15;
const CHART_HEIGHT = 140;
const ui = {emotions: [], colours: {}, cameras: new Map(), live: 'connecting', reconnects: 0};
window.ferDashboard = ui;

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

// A dashboard started with a token is opened as /?token=...: the API calls carry it, the
// video URLs too (an <img> cannot send a header).
const TOKEN = new URLSearchParams(location.search).get('token');
const FETCH = {cache: 'no-store', headers: TOKEN ? {Authorization: 'Bearer ' + TOKEN} : {}};
const withToken = (url) => TOKEN ? url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(TOKEN) : url;

class HttpError extends Error {
  constructor(url, status) { super(url + ': HTTP ' + status); this.status = status; }
}

async function getJSON(url) {
  const r = await fetch(url, FETCH);
  if (!r.ok) throw new HttpError(url, r.status);
  return r.json();
}

const clock = (t) => new Date(t * 1000).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', second: '2-digit',
                                                                 hour12: false});
const pct = (v) => Math.round(v * 100) + '%';
const ago = (s) => s < 90 ? Math.round(s) + ' s' : s < 5400 ? Math.round(s / 60) + ' min' : Math.round(s / 3600) + ' h';

// -- cameras ------------------------------------------------------------------------------------
async function discover() {
  try {
    const d = await getJSON('/api/cameras');
    ui.emotions = d.emotions;
    ui.colours = d.colours;
    const legend = document.getElementById('legend');
    if (!legend.childElementCount) {
      for (const e of d.emotions) {
        const i = el('i'); i.style.background = ui.colours[e] || '#fff';
        legend.append(el('span', {}, i, e));
      }
    }
    for (const cam of d.cameras) if (!ui.cameras.has(cam)) addCamera(cam);
    document.getElementById('nocameras').hidden = ui.cameras.size > 0;
  } catch (e) {
    if (e.status === 401) showProblem('offline', 'This dashboard needs its token: open it as /?token=<token> ' +
                                                 '(the address the dashboard printed when it started).');
  }
}

function addCamera(cam) {
  const badge = el('span', {className: 'badge', textContent: 'waiting'});
  const caption = el('span', {className: 'caption', textContent: 'waiting for frames'});
  const img = el('img', {alt: 'camera ' + cam + ', annotated'});
  img.title = 'Box caption: #track emotion confidence. "~": the label is carried over from an earlier frame ' +
              '(this frame\u2019s own label was not in yet).';
  const overlay = el('div', {className: 'overlay'});
  const video = el('figure', {className: 'video'}, img, overlay,
    el('figcaption', {textContent: '#track emotion confidence on each face; ~ marks a label carried over from ' +
                                   'an earlier frame (this frame\u2019s was not in yet)'}));
  // A narrow card shows this one legend instead of one under every chart (app.css).
  const legend = el('div', {className: 'camlegend'}, ...ui.emotions.map((e) => {
    const i = el('i'); i.style.background = ui.colours[e] || '#fff';
    return el('span', {}, i, e);
  }));
  const charts = el('div', {className: 'charts'}, legend, el('p', {className: 'none', textContent: 'no one in view'}));
  const endedList = el('ul');
  const endedTitle = el('summary', {textContent: 'ended tracks (0)'});
  const ended = el('details', {className: 'ended'}, endedTitle, endedList);
  ended.hidden = true;
  const section = el('article', {className: 'camera'},
    el('h2', {}, el('span', {className: 'name', textContent: cam}), badge, caption),
    el('div', {className: 'body'}, video, el('div', {className: 'charts-col'}, charts, ended)));
  section.dataset.camera = cam;
  document.getElementById('cameras').append(section);
  const c = {section, img, badge, caption, overlay, charts, ended, endedTitle, endedList, plots: new Map(),
             index: ui.cameras.size, live: null};
  img.addEventListener('load', () => img.classList.add('loaded'));
  img.addEventListener('error', () => { c.broken = true; });
  ui.cameras.set(cam, c);
  connectVideo(cam, c);
}

function connectVideo(cam, c) {
  // The stream URL changes on each reconnect, so the browser opens a new connection.
  c.broken = false;
  const n = '&n=' + (ui.reconnects++);
  if (c.index < MAX_STREAMS) {
    c.img.src = withToken('/api/stream/' + encodeURIComponent(cam) + '?fps=' + STREAM_FPS + n);
  } else {
    c.img.src = withToken('/api/frame/' + encodeURIComponent(cam) + '?t=' + Date.now() + n);
  }
}

// -- charts -------------------------------------------------------------------------------------
function makePlot(c, track, box) {
  const series = [{label: 'time', value: (u, v) => v == null ? '' : clock(v)}];
  for (const e of ui.emotions) {
    series.push({label: e, stroke: ui.colours[e] || '#fff', width: 1.5, points: {show: false},
                 value: (u, v) => v == null ? '\u2013' : pct(v)});
  }
  const axis = {stroke: '#9fb3c8', grid: {stroke: '#2a313a', width: 1}, ticks: {stroke: '#2a313a', width: 1},
                font: '11px system-ui, sans-serif'};
  const opts = {
    width: Math.max(box.clientWidth, 200), height: CHART_HEIGHT,
    scales: {x: {time: true, range: () => [c.t0, c.t1]}, y: {auto: false, range: [0, 1]}},
    axes: [
      // Clock time, labelled by our own formatter (24 h, seconds), recorded for the page's tests.
      {...axis, space: 64, size: 28, values: (u, splits) => {
        const labels = splits.map(clock);
        box.dataset.xTicks = labels.join(' ');
        return labels;
      }},
      {...axis, size: 50, splits: () => [0, 0.25, 0.5, 0.75, 1], values: (u, splits) => splits.map(pct)},
    ],
    series,
    legend: {live: true},
    cursor: {drag: {x: false, y: false}, points: {size: 5}},
  };
  const data = [[], ...ui.emotions.map(() => [])];
  const plot = new uPlot(opts, data, box);
  new ResizeObserver(() => {
    const w = Math.max(box.clientWidth, 200);
    if (w !== plot.width) plot.setSize({width: w, height: CHART_HEIGHT});
  }).observe(box);
  return plot;
}

function columns(tr) {
  // uPlot's columns: times, then one probability column per emotion; a null breaks the line
  // where the track went unlabelled for a while (the face was not detected).
  const xs = [], ys = ui.emotions.map(() => []);
  tr.t.forEach((t, i) => {
    if (i > 0 && t - tr.t[i - 1] > GAP_S) {
      xs.push((t + tr.t[i - 1]) / 2);
      ys.forEach((y) => y.push(null));
    }
    xs.push(t);
    ys.forEach((y, k) => y.push(tr.p[k][i]));
  });
  return [xs, ...ys];
}

async function refreshCharts(cam, c) {
  let d;
  try {
    d = await getJSON('/api/tracks/' + encodeURIComponent(cam) + '?seconds=' + WINDOW_S);
  } catch (e) { return; } // the status poll says what is wrong
  if (!ui.emotions.length) return;
  // One time range for all of a camera's charts (they line up): back to its oldest live track's
  // first label, within [MIN_SPAN_S, WINDOW_S].
  c.t1 = d.now || Date.now() / 1000;
  const first = Math.min(c.t1, ...d.tracks.map((tr) => tr.t.length ? tr.t[0] : c.t1));
  c.t0 = Math.min(c.t1 - MIN_SPAN_S, Math.max(c.t1 - WINDOW_S, first));
  const shown = new Set();
  for (const tr of d.tracks) {
    const key = String(tr.track);
    shown.add(key);
    let p = c.plots.get(key);
    if (!p) {
      const head = el('div', {className: 'trackhead'});
      const box = el('div', {className: 'plot'});
      const wrap = el('div', {className: 'track'}, head, box);
      wrap.dataset.track = key;
      c.charts.append(wrap);
      p = {wrap, head, box, plot: makePlot(c, key, box)};
      c.plots.set(key, p);
    }
    p.head.replaceChildren(el('b', {textContent: 'track #' + tr.track}),
      el('span', {textContent: 'now ' + tr.emotion + ' ' + pct(tr.confidence)}),
      el('span', {textContent: 'in view ' + ago(tr.last - tr.started)}));
    p.plot.setData(columns(tr));
    p.box.dataset.points = String(tr.t.length);
  }
  for (const [key, p] of c.plots) {
    if (!shown.has(key)) { p.plot.destroy(); p.wrap.remove(); c.plots.delete(key); }
  }
  // Keep the charts in track order.
  [...c.plots.keys()].sort((a, b) => a - b).forEach((k) => c.charts.append(c.plots.get(k).wrap));
  c.charts.querySelector('.none').hidden = c.plots.size > 0;
  c.ended.hidden = d.ended.length === 0;
  c.endedTitle.textContent = 'ended tracks (' + d.ended.length + ')';
  c.endedList.replaceChildren(...d.ended.map((e) => {
    const li = el('li', {textContent: '#' + e.track + '  ' + clock(e.started) + '\u2013' + clock(e.ended) +
      ' (' + ago(e.ended - e.started) + ')  mostly ' + e.emotion + ' (' + pct(e.share) + ' of ' + e.labels +
      ' labels)'});
    li.dataset.track = String(e.track);
    return li;
  }));
}

// -- status: live, stopped, or offline ----------------------------------------------------------
function row(tbody, cells) {
  tbody.append(el('tr', {}, ...cells.map((v) => el('td', {textContent: String(v)}))));
}

function setLive(state, banner) {
  const wasOffline = ui.live === 'offline';
  ui.live = state;
  document.body.dataset.live = state;
  document.getElementById('pill').textContent = {live: 'live', stopped: 'stopped', offline: 'offline'}[state] || state;
  const b = document.getElementById('banner');
  b.hidden = !banner;
  b.textContent = banner || '';
  if (wasOffline && state !== 'offline') {
    // Back from an outage: the old streams' connections are gone; open new ones.
    for (const [cam, c] of ui.cameras) connectVideo(cam, c);
  }
}

function showProblem(state, text) {
  setLive(state, text);
  document.getElementById('headline').textContent = '';
  for (const c of ui.cameras.values()) c.overlay.textContent = state === 'offline' ? 'no connection' : '';
}

function describeAlive(alive) {
  const parts = ['producer', 'worker', 'logger', 'display'].filter((r) => alive[r]).map((r) => r + ' ' + alive[r]);
  return parts.length ? parts.join(', ') : 'none';
}

function cameraStatus(cam, c, info) {
  c.live = info.live;
  c.section.classList.toggle('stale', !info.live);
  c.section.dataset.live = info.live ? 'live' : 'stale';
  const ages = [info.frame_age_s, info.label_age_s].filter((a) => a != null);
  const quiet = ages.length ? Math.min(...ages) : null;
  c.badge.textContent = info.live ? 'live' : info.ended ? 'source ended' :
    quiet == null ? 'no frames yet' : 'stopped ' + ago(quiet) + ' ago';
  c.overlay.textContent = info.live ? '' : info.ended ? 'the source ended' :
    quiet == null ? 'no frames yet' : 'no new frames for ' + ago(quiet);
  if (info.frame_index != null) {
    c.section.dataset.frameIndex = String(info.frame_index);
    let text = 'frame ' + info.frame_index + ' \u00b7 ' + info.faces + (info.faces === 1 ? ' face' : ' faces');
    if (info.carried_over) text += ' (' + info.carried_over + ' ~ carried over)';
    c.caption.textContent = text;
  }
  if (c.broken && info.live) connectVideo(cam, c);
  if (c.index >= MAX_STREAMS && info.live) connectVideo(cam, c);
}

async function refreshStatus() {
  let s;
  try {
    s = await getJSON('/api/status');
  } catch (e) {
    if (e.status === 503) {
      showProblem('offline', 'Redis is unreachable (the dashboard itself is up): showing the last data received; ' +
                             'retrying every second.');
    } else if (e.status === 401) {
      showProblem('offline', 'This dashboard needs its token: open it as /?token=<token>.');
    } else {
      showProblem('offline', 'The dashboard server is unreachable: showing the last data received; retrying every ' +
                             'second.');
    }
    return;
  }
  document.getElementById('headline').textContent =
    s.broker + '  \u00b7  prefix ' + s.prefix + '  \u00b7  alive: ' + describeAlive(s.alive);
  const cams = Object.entries(s.cameras);
  for (const [cam, info] of cams) {
    const c = ui.cameras.get(cam);
    if (c) cameraStatus(cam, c, info);
  }
  if (!cams.length) {
    setLive('stopped', null);
  } else if (s.live) {
    setLive('live', null);
  } else {
    const ages = cams.flatMap(([, i]) => [i.frame_age_s, i.label_age_s]).filter((a) => a != null);
    const since = ages.length ? 'for ' + ago(Math.min(...ages)) : 'yet';
    const ended = cams.every(([, i]) => i.ended);
    setLive('stopped', (ended ? 'Every source ended' : 'The pipeline looks stopped') + ': no new frames or labels ' +
      since + ' (processes alive: ' + describeAlive(s.alive) + '). The video and charts show the last data ' +
      'received; the page goes live again when data arrives.');
  }

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
  document.getElementById('problems').replaceChildren(...s.problems.map((p) => el('li', {textContent: p})));
}

function tick() {
  refreshStatus();
  for (const [cam, c] of ui.cameras) refreshCharts(cam, c);
}

discover().then(tick);
setInterval(discover, 3000);
setInterval(tick, 1000);
