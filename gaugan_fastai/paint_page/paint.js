// The GauGAN paint page (served by `gaugan_fastai.paint`; no outside scripts or fonts).
// The label map is an array of class ids, one byte a pixel. Every tool writes ids into it and the canvas only shows
// it through the palette, so a brush edge can never blend two classes into the colour of neither.
'use strict';
(() => {
const $ = id => document.getElementById(id);
const IGNORE_INDEX = 255;  // dontcare / nodata pixels (from uploaded maps): black, not paintable
const MAX_UNDO = 100;

const state = {info: null, H: 0, W: 0, labels: null, current: 0, undo: [], redo: [], georef: null, style: null,
               selected: 0, scale: 1, tool: 'brush', brush: 8};
// Generation: `seq` numbers the edits; at most one request is in flight and at most one is pending (the newest
// state, sent when the one in flight returns); older states are never sent. `latencies` are for the status line
// and for tests: from the end of an edit (mouse-up) to the frame that shows its image.
const gen = {client: Math.random().toString(36).slice(2), seq: 0, inflight: false, pending: false, shown: 0,
             editTimes: new Map(), latencies: []};
window.gauganPaint = {state, gen};

// ---- talking to the server
async function api(path, options = {}) {
  const r = await fetch(path, options);
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON: keep the status line */ }
    throw new Error(msg);
  }
  return r;
}
const b64decode = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));
function b64encode(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function showMessage(text, error = false) {
  const m = $('message');
  m.textContent = text;
  m.className = error ? 'error' : '';
}
function tooBig(file) {
  const max = state.info.max_upload_bytes;
  if (file.size <= max) return false;
  showMessage(`${file.name}: ${(file.size / 2 ** 20).toFixed(1)} MB, over the ${(max / 2 ** 20).toFixed(0)} MB upload limit`, true);
  return true;
}
function saveBlob(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- showing the label map
let lut, labelCtx, labelImage;
function buildLut() {
  lut = new Uint8Array(256 * 4);
  for (const c of state.info.classes) lut.set([...c.color, 255], 4 * c.id);
  lut.set([0, 0, 0, 255], 4 * IGNORE_INDEX);
}
function renderLabels() {
  const d = labelImage.data, L = state.labels;
  for (let i = 0, j = 0; i < L.length; i++, j += 4) {
    const k = 4 * L[i];
    d[j] = lut[k]; d[j + 1] = lut[k + 1]; d[j + 2] = lut[k + 2]; d[j + 3] = 255;
  }
  labelCtx.putImageData(labelImage, 0, 0);
}
let renderQueued = false;
function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; renderLabels(); });
}

// ---- edits, undo and redo
function pushUndo(snapshot) {
  state.undo.push(snapshot);
  if (state.undo.length > MAX_UNDO) state.undo.shift();
  state.redo = [];
  updateButtons();
}
function edited() { queueRender(); requestGeneration(); }
function undo() {
  if (!state.undo.length) return;
  state.redo.push(state.labels);
  state.labels = state.undo.pop();
  updateButtons(); edited();
}
function redo() {
  if (!state.redo.length) return;
  state.undo.push(state.labels);
  state.labels = state.redo.pop();
  updateButtons(); edited();
}
function replaceLabels(ids) {
  pushUndo(state.labels);
  state.labels = ids;
  edited();
}
function fillAll() {
  pushUndo(state.labels.slice());
  state.labels.fill(state.current);
  edited();
}
function updateButtons() {
  $('undo').disabled = !state.undo.length;
  $('redo').disabled = !state.redo.length;
  $('download-geotiff').disabled = !state.georef;
}

// ---- brush and bucket, in label-map pixels
function stamp(x, y) {
  const {W, H, labels: L, current: c} = state, r = state.brush / 2;
  const x0 = Math.max(0, Math.floor(x - r)), x1 = Math.min(W - 1, Math.floor(x + r));
  const y0 = Math.max(0, Math.floor(y - r)), y1 = Math.min(H - 1, Math.floor(y + r));
  for (let j = y0; j <= y1; j++)
    for (let i = x0; i <= x1; i++) {
      const dx = i + 0.5 - x, dy = j + 0.5 - y;
      if (dx * dx + dy * dy <= r * r) L[j * W + i] = c;
    }
  const i = Math.floor(x), j = Math.floor(y);  // the pixel under the pointer, even for the smallest brush
  if (i >= 0 && i < W && j >= 0 && j < H) L[j * W + i] = c;
}
let last = null;
function strokeTo(x, y) {
  const d = Math.hypot(x - last[0], y - last[1]), n = Math.ceil(d / Math.max(0.25, state.brush / 8));
  for (let k = 1; k <= n; k++) stamp(last[0] + (x - last[0]) * k / n, last[1] + (y - last[1]) * k / n);
  last = [x, y];
}
function bucket(x, y) {
  const {W, H, labels: L, current: c} = state, i = Math.floor(x), j = Math.floor(y);
  if (i < 0 || i >= W || j < 0 || j >= H || L[j * W + i] === c) return false;
  const target = L[j * W + i], stack = [j * W + i];  // 4-connected flood fill of the clicked region
  while (stack.length) {
    const p = stack.pop();
    if (L[p] !== target) continue;
    L[p] = c;
    const px = p % W;
    if (px > 0) stack.push(p - 1);
    if (px < W - 1) stack.push(p + 1);
    if (p >= W) stack.push(p - W);
    if (p < L.length - W) stack.push(p + W);
  }
  return true;
}
function toMap(e) {
  const r = $('labels').getBoundingClientRect();
  return [(e.clientX - r.left) * state.W / r.width, (e.clientY - r.top) * state.H / r.height];
}
function moveCursor(e) {
  const cur = $('brush-cursor'), box = $('canvas-box').getBoundingClientRect(), d = state.brush * state.scale;
  if (state.tool !== 'brush') { cur.style.display = 'none'; return; }
  Object.assign(cur.style, {display: 'block', width: `${d}px`, height: `${d}px`,
                            left: `${e.clientX - box.left - d / 2}px`, top: `${e.clientY - box.top - d / 2}px`});
}
let drawing = false;
function setupCanvas() {
  const cv = $('labels');
  cv.addEventListener('pointerdown', e => {
    if (e.button !== 0) return;
    const [x, y] = toMap(e);
    if (state.tool === 'bucket') {
      const before = state.labels.slice();
      if (bucket(x, y)) { pushUndo(before); edited(); }
      return;
    }
    cv.setPointerCapture(e.pointerId);
    drawing = true;
    pushUndo(state.labels.slice());
    last = [x, y];
    stamp(x, y);
    queueRender();
  });
  cv.addEventListener('pointermove', e => {
    moveCursor(e);
    if (drawing) { strokeTo(...toMap(e)); queueRender(); }
  });
  const end = e => {
    if (!drawing) return;
    drawing = false;
    strokeTo(...toMap(e));
    edited();
  };
  cv.addEventListener('pointerup', end);
  cv.addEventListener('pointercancel', end);
  cv.addEventListener('pointerleave', () => { $('brush-cursor').style.display = 'none'; });
}

// ---- generation
function requestGeneration() {
  gen.seq += 1;
  gen.editTimes.set(gen.seq, performance.now());
  if (gen.inflight) { gen.pending = true; return; }  // replaces any older pending state: nothing queues up
  sendGeneration();
}
function variations() { return state.info.encoder ? +$('variations').value : 1; }
async function sendGeneration() {
  gen.pending = false;
  gen.inflight = true;
  const seq = gen.seq, n = variations(), seed = +$('seed').value || 0, style = state.style;
  const body = new Uint8Array(state.labels.length + (style ? style.length : 0));
  body.set(state.labels);
  if (style) body.set(style, state.labels.length);
  const query = `client=${gen.client}&seq=${seq}&seed=${seed}&n=${n}&style=${style ? 1 : 0}`;
  try {
    const r = await api(`/api/generate?${query}`, {method: 'POST', body,
                                                    headers: {'Content-Type': 'application/octet-stream'}});
    if (r.status === 200 && seq > gen.shown) {  // 204: the server dropped it for a newer request
      const bytes = new Uint8Array(await r.arrayBuffer());
      gen.shown = seq;
      showImages(bytes, n);
      const serverMs = +r.headers.get('X-Generate-Ms');
      requestAnimationFrame(() => recordLatency(seq, serverMs));
    }
  } catch (err) {
    showMessage(`Generation failed: ${err.message}`, true);
  }
  gen.inflight = false;
  if (gen.pending) sendGeneration();
}
function recordLatency(seq, serverMs) {
  const now = performance.now();
  for (const [k, t] of gen.editTimes)
    if (k <= seq) { gen.latencies.push({seq: k, ms: now - t, server_ms: serverMs}); gen.editTimes.delete(k); }
  const lastMs = gen.latencies[gen.latencies.length - 1].ms;
  $('status').textContent = `(${Math.round(lastMs)} ms from mouse-up to image; the model took ${Math.round(serverMs)} ms)`;
}
function showImages(bytes, n) {
  const {W, H} = state, box = $('outputs'), size = W * H * 3;
  while (box.children.length > n) box.lastChild.remove();
  while (box.children.length < n) {
    const cv = document.createElement('canvas');
    cv.width = W; cv.height = H;
    cv.addEventListener('click', () => selectOutput([...box.children].indexOf(cv)));
    box.appendChild(cv);
  }
  [...box.children].forEach((cv, k) => {
    const im = new ImageData(W, H), d = im.data;
    for (let i = 0, j = k * size, o = 0; i < W * H; i++, j += 3, o += 4) {
      d[o] = bytes[j]; d[o + 1] = bytes[j + 1]; d[o + 2] = bytes[j + 2]; d[o + 3] = 255;
    }
    cv.getContext('2d').putImageData(im, 0, 0);
    const w = n === 1 ? W * state.scale : W * state.scale / 2;
    cv.style.width = `${w}px`;
  });
  selectOutput(Math.min(state.selected, n - 1));
}
function selectOutput(k) {
  state.selected = k;
  [...$('outputs').children].forEach((cv, i) => cv.classList.toggle('selected', i === k && $('outputs').children.length > 1));
}

// ---- the palette
function setClass(id) {
  state.current = id;
  const c = state.info.classes[id];
  document.querySelector('#current-class .swatch').style.background = `rgb(${c.color})`;
  document.querySelector('#current-class .name').textContent = `${c.id}: ${c.name}`;
  for (const b of $('palette').children) b.setAttribute('aria-selected', String(+b.dataset.id === id));
}
function buildPalette() {
  const pal = $('palette');
  for (const c of state.info.classes) {
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.id = c.id;
    b.setAttribute('role', 'option');
    b.innerHTML = '<span class="swatch"></span><span></span>';
    b.firstChild.style.background = `rgb(${c.color})`;
    b.lastChild.textContent = `${c.id}: ${c.name}`;
    b.addEventListener('click', () => setClass(c.id));
    pal.appendChild(b);
  }
  $('search').addEventListener('input', () => {
    const q = $('search').value.trim().toLowerCase();
    for (const b of pal.children) b.hidden = q !== '' && !b.textContent.toLowerCase().includes(q);
  });
  $('search').addEventListener('keydown', e => {  // Enter picks the first class shown
    const first = [...pal.children].find(b => !b.hidden);
    if (e.key === 'Enter' && first) setClass(+first.dataset.id);
  });
}

// ---- starting points, style, downloads
function loadMap(j) {
  replaceLabels(b64decode(j.ids));
  state.georef = j.georef || null;
  updateButtons();
  showMessage(j.message || '');
}
async function uploadLabels(file) {
  if (tooBig(file)) return;
  try {
    const r = await api('/api/labels', {method: 'POST', body: file,
                                         headers: {'X-Filename': encodeURIComponent(file.name)}});
    loadMap(await r.json());
  } catch (err) { showMessage(err.message, true); }
}
async function randomExample() {
  const ex = state.info.examples, index = Math.floor(Math.random() * ex.count);
  try { loadMap(await (await api(`/api/example?index=${index}`)).json()); }
  catch (err) { showMessage(err.message, true); }
}
async function uploadStyle(file) {
  if (tooBig(file)) return;
  try {
    const r = await api('/api/style', {method: 'POST', body: file,
                                        headers: {'X-Filename': encodeURIComponent(file.name)}});
    const j = await r.json();
    state.style = b64decode(j.rgb);
    const cv = $('style-preview'), im = new ImageData(state.W, state.H);
    cv.width = state.W; cv.height = state.H;
    for (let i = 0; i < state.W * state.H; i++) im.data.set([...state.style.subarray(3 * i, 3 * i + 3), 255], 4 * i);
    cv.getContext('2d').putImageData(im, 0, 0);
    cv.hidden = $('clear-style').hidden = false;
    showMessage(j.message);
    requestGeneration();
  } catch (err) { showMessage(err.message, true); }
}
function clearStyle() {
  state.style = null;
  $('style-preview').hidden = $('clear-style').hidden = true;
  requestGeneration();
}
async function download(kind) {
  try {
    if (kind === 'image') {
      const cv = $('outputs').children[state.selected];
      if (!cv) throw new Error('No image has been generated yet');
      cv.toBlob(b => saveBlob(b, 'generated.png'), 'image/png');
    } else if (kind === 'png') {
      const r = await api('/api/download/labels.png', {method: 'POST', body: state.labels});
      saveBlob(await r.blob(), 'labels.png');
    } else {
      const r = await api('/api/download/labels.tif', {method: 'POST', headers: {'Content-Type': 'application/json'},
                          body: JSON.stringify({ids: b64encode(state.labels), georef: state.georef})});
      saveBlob(await r.blob(), 'labels.tif');
    }
  } catch (err) { showMessage(err.message, true); }
}

function setupControls() {
  for (const r of document.querySelectorAll('input[name=tool]'))
    r.addEventListener('change', () => { state.tool = r.value; });
  $('brush-size').addEventListener('input', () => { state.brush = +$('brush-size').value; $('brush-size-value').value = state.brush; });
  $('undo').addEventListener('click', undo);
  $('redo').addEventListener('click', redo);
  $('fill-all').addEventListener('click', fillAll);
  $('blank').addEventListener('click', () => { fillAll(); state.georef = null; updateButtons(); showMessage(''); });
  $('example').addEventListener('click', randomExample);
  $('upload').addEventListener('change', e => { const f = e.target.files[0]; e.target.value = ''; if (f) uploadLabels(f); });
  $('seed').addEventListener('change', requestGeneration);
  $('new-style').addEventListener('click', () => { $('seed').value = Math.floor(Math.random() * 2 ** 31); requestGeneration(); });
  $('variations').addEventListener('change', requestGeneration);
  $('style-upload').addEventListener('change', e => { const f = e.target.files[0]; e.target.value = ''; if (f) uploadStyle(f); });
  $('clear-style').addEventListener('click', clearStyle);
  $('download-labels').addEventListener('click', () => download('png'));
  $('download-geotiff').addEventListener('click', () => download('geotiff'));
  $('download-image').addEventListener('click', () => download('image'));
  document.addEventListener('keydown', e => {
    if (e.target.tagName === 'INPUT' || !(e.ctrlKey || e.metaKey)) return;
    const k = e.key.toLowerCase();
    if (k === 'z' && !e.shiftKey) { e.preventDefault(); undo(); }
    else if (k === 'y' || (k === 'z' && e.shiftKey)) { e.preventDefault(); redo(); }
  });
}

async function start() {
  try { state.info = await (await api('/api/info')).json(); }
  catch (err) { showMessage(`Cannot reach the model server: ${err.message}`, true); return; }
  const info = state.info;
  [state.H, state.W] = info.size;
  state.scale = Math.min(8, 448 / Math.max(state.H, state.W));  // small models shown larger
  const cv = $('labels');
  cv.width = state.W; cv.height = state.H;
  cv.style.width = `${state.W * state.scale}px`;
  labelCtx = cv.getContext('2d');
  labelImage = labelCtx.createImageData(state.W, state.H);
  $('model-info').textContent = `${info.name}: ${info.classes.length} classes, ${state.H}x${state.W} pixels` +
                                (info.encoder ? ', style encoder' : '') + `, ${info.precision.split(' ')[0]}`;
  $('model-info').title = `computing in ${info.precision}`;
  $('style-unavailable').hidden = info.encoder;
  $('style-available').hidden = !info.encoder;
  $('example').title = info.examples.source;
  buildLut(); buildPalette(); setClass(0); setupCanvas(); setupControls();
  state.labels = new Uint8Array(state.W * state.H);
  updateButtons();
  edited();
  document.body.dataset.ready = 'true';
}
start();
})();
