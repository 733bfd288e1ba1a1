// The tutor's web page: plain ES module, no build step. The vendored libraries are classic deferred
// scripts in index.html, so their globals (marked, katex, DOMPurify) exist before this module runs.
/* global marked, katex, DOMPurify */

// --- Rendering: the one place where model text becomes HTML -------------------------------------
// Markdown (marked) with LaTeX maths (KaTeX), then DOMPurify, then the DOM. Maths are marked tokens
// of their own, so code spans and fenced blocks (lexed by marked first) keep `$x$` literal, and
// `\(` is read as maths before Markdown can take it for an escaped bracket.

function tex(source, displayMode) {
  try {
    return katex.renderToString(source, { displayMode, throwOnError: false });
  } catch {  // throwOnError only covers parse errors; anything else shows as the source
    return `<code>${source.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)}</code>`;
  }
}

const blockMath = {
  name: 'blockMath',
  level: 'block',
  start: (src) => src.match(/^ {0,3}(?:\$\$|\\\[)/m)?.index,
  tokenizer(src) {
    const m = /^ {0,3}(?:\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\])[ \t]*(?:\n+|$)/.exec(src);
    if (m) return { type: 'blockMath', raw: m[0], text: (m[1] ?? m[2]).trim() };
  },
  renderer: (token) => `<div class="math-display">${tex(token.text, true)}</div>\n`,
};

// $...$ must hug its content and not be followed by a digit, so "costs $5 and $10" stays text;
// no backtick inside, so a dollar before a code span cannot swallow it.
const INLINE_MATH = [
  [/^\$\$([\s\S]+?)\$\$/, true],
  [/^\\\[([\s\S]+?)\\\]/, true],
  [/^\\\(([\s\S]+?)\\\)/, false],
  [/^\$(?![\s$])((?:\\.|[^\\$\n`])+?)(?<!\s)\$(?!\d)/, false],
];
const inlineMath = {
  name: 'inlineMath',
  level: 'inline',
  start: (src) => src.match(/\$|\\[([]/)?.index,
  tokenizer(src) {
    for (const [pattern, display] of INLINE_MATH) {
      const m = pattern.exec(src);
      if (m) return { type: 'inlineMath', raw: m[0], text: m[1].trim(), display };
    }
  },
  renderer: (token) => tex(token.text, token.display),
};

const markdown = new marked.Marked({ gfm: true, extensions: [blockMath, inlineMath] });

// <style> would restyle the page and form controls could imitate ours; the rest of DOMPurify's
// defaults (no scripts, no event handlers, no javascript: URLs) is what we want. KaTeX's MathML
// keeps the TeX in <semantics><annotation>, plain text, for screen readers (not annotation-xml).
const PURIFY = { FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select'], ADD_TAGS: ['semantics', 'annotation'],
                 ADD_ATTR: ['encoding'], RETURN_DOM_FRAGMENT: true };
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {  // a link from a reply opens elsewhere and learns nothing about this page
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

/** Markdown + maths -> a sanitized DocumentFragment. `inline` for table cells (no paragraphs). */
function render(text, { inline = false } = {}) {
  const html = inline ? markdown.parseInline(text) : markdown.parse(text);
  return DOMPurify.sanitize(html, PURIFY);
}

// --- Diagrams: (DIAGRAM: description) markers, drawn by the server ------------------------------
// Each drawn marker becomes a placeholder (private-use characters Markdown leaves alone) before
// rendering, and the placeholder becomes an <img> after sanitizing: the picture never passes
// through HTML text at all.

const OPEN = /\(\s*DIAGRAM\s*:/gi;
const HOLE = /\uE000(\d+)\uE001/;

/** The markers of `text` (brackets balanced, as tutor.markers does): [{start, end, description}]. */
function markers(text) {
  const found = [];
  for (let m; (m = OPEN.exec(text));) {
    let depth = 1, i = OPEN.lastIndex;
    for (; i < text.length && depth; i++) depth += text[i] === '(' ? 1 : text[i] === ')' ? -1 : 0;
    if (depth) break;
    found.push({ start: m.index, end: i, description: text.slice(OPEN.lastIndex, i - 1).split(/\s+/).filter(Boolean).join(' ') });
    OPEN.lastIndex = i;
  }
  OPEN.lastIndex = 0;
  return found;
}

function withDiagrams(text, diagrams = []) {
  text = text.replace(/[\uE000\uE001]/g, '');  // the reply's own would be taken for placeholders
  const drawn = diagrams.filter((d) => d.ok && d.png);
  const pictures = [];
  let out = '', pos = 0;
  for (const marker of markers(text)) {
    const at = drawn.findIndex((d) => d.description === marker.description);
    if (at < 0) continue;  // not drawn: the marker stays as text
    pictures.push(drawn.splice(at, 1)[0]);
    out += `${text.slice(pos, marker.start)}\uE000${pictures.length - 1}\uE001`;
    pos = marker.end;
  }
  return { text: out + text.slice(pos), pictures };
}

function placePictures(fragment, pictures) {
  const walker = document.createTreeWalker(fragment, NodeFilter.SHOW_TEXT);
  const holes = [];
  while (walker.nextNode()) if (HOLE.test(walker.currentNode.data)) holes.push(walker.currentNode);
  for (let node of holes) {
    for (let m; (m = HOLE.exec(node.data));) {
      const rest = node.splitText(m.index);
      node = rest.splitText(m[0].length);
      rest.replaceWith(picture(pictures[Number(m[1])]));
    }
  }
}

function picture(diagram) {
  const figure = el('figure', 'diagram');
  const img = el('img');
  img.alt = diagram.description;
  figure.append(img, el('figcaption', '', diagram.description));
  pictureUrl(diagram.png).then((url) => { img.src = url; }, (err) => { figure.append(el('p', 'error', err.message)); });
  return figure;
}

// An <img> cannot send the API key, so pictures are fetched with it and shown from blob: URLs;
// only from this server, so the key never goes anywhere else.
const pictures = new Map();
function pictureUrl(path) {
  if (new URL(path, location.href).origin !== location.origin) return Promise.reject(new Error(`not this server's picture: ${path}`));
  if (!pictures.has(path)) pictures.set(path, api(path).then((r) => r.blob()).then((blob) => URL.createObjectURL(blob)));
  return pictures.get(path);
}

// --- The server ---------------------------------------------------------------------------------

const store = {
  get: (name, fallback) => { try { return JSON.parse(localStorage.getItem(`tutor.${name}`)) ?? fallback; } catch { return fallback; } },
  set: (name, value) => localStorage.setItem(`tutor.${name}`, JSON.stringify(value)),
};

async function api(path, body, signal) {
  const headers = { Authorization: `Bearer ${store.get('key', '')}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method: body === undefined ? 'GET' : 'POST', headers, signal,
                                       body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const reply = await response.json();
      const detail = reply.error?.message ?? reply.detail;
      if (detail) message = typeof detail === 'string' ? detail : JSON.stringify(detail);
    } catch { /* not JSON: the status says enough */ }
    throw new Error(response.status === 401 ? `${message} (set the API key at the top)` : message);
  }
  return response;
}

const getJSON = async (path, body) => (await api(path, body)).json();

/** The `data:` payloads of a server-sent-events response, as they arrive. */
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = blocks.pop();
    for (const block of blocks) {
      const data = block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
      if (data.length) yield data.join('\n');  // comment lines (": ping") carry no data
    }
  }
}

// --- Replies ------------------------------------------------------------------------------------

function el(tag, className = '', text = '') {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

const fmt = (n) => (Number.isInteger(n) ? String(n) : Number(n).toFixed(1));

function questionText(q) {  // a Question record as Markdown: stem, parts, options
  if (q.text) return q.text;
  return [q.stem, ...(q.parts ?? []).map((p) => `**(${p.label})** ${p.text} [${p.marks}]`),
          ...Object.entries(q.options ?? {}).map(([letter, option]) => `**${letter}** ${option}`)].join('\n\n');
}

function list(items, className) {
  const ul = el('ul', className);
  for (const item of items) ul.append(el('li', '', item));
  return ul;
}

function markView(r) {
  const box = document.createDocumentFragment();
  box.append(el('p', 'total', `${fmt(r.marks)} / ${fmt(r.out_of)} marks`));
  const table = el('table', 'points');
  const head = table.createTHead().insertRow();
  for (const name of ['', 'Marking point', 'Marks', 'Evidence']) head.append(el('th', '', name));
  const rows = table.createTBody();
  for (const p of r.points ?? []) {
    const point = p.point ?? p;  // PointMark is flat; tolerate {point: {...}, awarded} too
    const row = rows.insertRow();
    row.className = p.awarded ? 'awarded' : 'missed';
    const mark = row.insertCell();
    mark.textContent = p.awarded ? '✓' : '✗';
    mark.title = p.awarded ? 'awarded' : 'not awarded';
    const text = row.insertCell();
    if (point.part) text.append(el('b', '', `(${point.part}) `));
    text.append(render(point.text ?? '', { inline: true }));
    row.insertCell().textContent = `${p.awarded ? fmt(point.marks) : 0} / ${fmt(point.marks)}`;
    const evidence = row.insertCell();
    if (p.evidence) evidence.append(el('q', '', p.evidence));
    else if (p.why) evidence.append(el('span', 'why', p.why));
  }
  box.append(table);
  const levels = (r.levels ?? []).map((l) => `${l.part ? `Part ${l.part}` : 'Answer'}${l.strand ? ` (${l.strand})` : ''}: level ${l.level}, `
    + `${fmt(l.marks)} / ${l.out_of} marks (estimated)${l.descriptor ? ` - ${l.descriptor}` : ''}`);
  if (levels.length) box.append(list(levels, 'levels'));
  if (r.levelled?.length) box.append(el('p', 'note', `Left to an examiner (marked by levels): ${r.levelled.join(', ')}`));
  if (r.feedback?.length) box.append(el('h3', '', 'Feedback'), list(r.feedback));
  if (r.checks?.length) box.append(el('h3', '', 'Checks'), list(r.checks));
  box.append(el('p', 'note', `Marker: ${r.marker}${r.truncated ? '; the answer was cut to the length a marker reads' : ''}`));
  if (r.sources?.length) box.append(el('p', 'note sources', `Reference material: ${r.sources.map((s) => `[${s}]`).join(', ')}`));
  return box;
}

function setView(r) {
  const box = document.createDocumentFragment();
  (r.accepted ?? []).forEach((item, i) => {
    const q = item.question;
    box.append(el('h3', '', `Question ${i + 1} · ${q.marks} mark${q.marks === 1 ? '' : 's'}`), render(questionText(q)));
    if (item.gold?.text) {
      const gold = el('details');
      gold.append(el('summary', '', 'Gold answer'), render(item.gold.text));
      box.append(gold);
    }
    if (item.novelty !== undefined) box.append(el('p', 'note', `novelty ${Number(item.novelty).toFixed(2)}`));
  });
  if (!r.accepted?.length) box.append(el('p', 'note', 'No question passed the checks.'));
  for (const reject of r.rejected ?? []) {
    const details = el('details', 'rejected');
    details.append(el('summary', '', `Rejected: ${reject.reasons.join('; ')}`), render(reject.text));
    box.append(details);
  }
  return box;
}

/** Draws `entry` (from this session or from the history) into `body`. */
function paint(body, entry) {
  try {
    body.replaceChildren(...view(entry));
  } catch (err) {  // a history entry of another version, say: say so, and keep the page working
    body.replaceChildren(el('p', 'error', `This reply cannot be shown: ${err.message}`));
  }
}

function view(entry) {
  const parts = [];
  const r = entry.result;
  if (entry.mode === 'answer' || entry.mode === 'explain') {
    const { text, pictures } = withDiagrams(entry.text ?? '', r?.diagrams);
    const fragment = render(text);
    placePictures(fragment, pictures);
    parts.push(fragment);
    for (const failed of (r?.diagrams ?? []).filter((d) => !d.ok && d.error)) {
      parts.push(el('p', 'note', `Diagram not drawn${failed.description ? ` (${failed.description})` : ''}: ${failed.error}`));
    }
    if (r?.cut) parts.push(el('p', 'note', '[stopped at the token limit]'));
    if (r?.sources?.length) parts.push(el('p', 'note sources', `Sources: ${r.sources.map((s) => `[${s}]`).join(', ')}`));
  } else if (r && entry.mode === 'mark') parts.push(markView(r));
  else if (r && entry.mode === 'set') parts.push(setView(r));
  else if (r && entry.mode === 'plan') {
    parts.push(render(r.table ?? ''));
    if (r.problems?.length) parts.push(list(r.problems, 'problems'));
  }
  if (entry.stopped) parts.push(el('p', 'note', '[stopped]'));
  if (entry.error) parts.push(el('p', 'error', entry.error));
  if (!parts.length) parts.push(el('p', 'note', '…'));
  return parts;
}

function copyText(entry) {
  const r = entry.result;
  if (entry.mode === 'mark' && r) {
    return [`${fmt(r.marks)} / ${fmt(r.out_of)} marks`,
            ...(r.points ?? []).map((p) => `${p.awarded ? '✓' : '✗'} ${(p.point ?? p).text}${p.evidence ? ` - "${p.evidence}"` : ''}`),
            ...(r.feedback ?? [])].join('\n');
  }
  if (entry.mode === 'set' && r) return (r.accepted ?? []).map((item) => questionText(item.question)).join('\n\n---\n\n');
  if (entry.mode === 'plan' && r) return r.table ?? '';
  return entry.text ?? '';
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {  // no clipboard API outside a secure context (plain http to another host): the old way
    const area = el('textarea', 'offscreen');
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  }
  button.textContent = 'Copied';
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}

const log = document.getElementById('log');

/** A turn in the log: what was asked, and the reply's view. Returns the reply body to paint into. */
function turn(entry) {
  const article = el('article', 'turn');
  article.append(el('div', 'you', `${entry.subject} · ${entry.mode}: ${entry.ask}`));
  const reply = el('div', 'reply');
  const body = el('div', 'body');
  const button = el('button', 'copy quiet', 'Copy');
  button.type = 'button';
  button.addEventListener('click', () => copy(copyText(entry), button));
  reply.append(body, button);
  article.append(reply);
  log.append(article);
  paint(body, entry);
  return body;
}

function follow() {  // keep the newest reply in view while it grows
  log.scrollTop = log.scrollHeight;
}

// --- History: kept in this browser only --------------------------------------------------------

const HISTORY_LIMIT = 100;
let history = store.get('history', []);
if (!Array.isArray(history)) history = [];

function remember(entry) {
  history.push(entry);
  history = history.slice(-HISTORY_LIMIT);
  for (;;) {
    try {
      store.set('history', history);
      return;
    } catch {  // over the storage quota: forget the oldest half
      if (history.length <= 1) return;
      history = history.slice(Math.floor(history.length / 2));
    }
  }
}

/** Shows `entry` as a finished turn and keeps it in the history (the tests use this to feed known text). */
function addEntry(entry) {
  turn(entry);
  remember(entry);
  follow();
}

// --- The form ----------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const form = $('ask');
const PLACEHOLDER = {
  answer: 'Ask a question, or pick one above',
  explain: 'What should be explained? Or pick a question above',
  mark: "The student's answer",
  plan: 'One result a line: question_id,marks,out_of (or JSON lines)',
};
let questions = [];
let controller = null;

function status(text, error = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
}

function options(select, items, blank) {
  select.replaceChildren(...(blank === undefined ? [] : [new Option(blank, '')]),
                         ...items.map(([value, label]) => new Option(label, value)));
}

function showMode() {
  const mode = $('mode').value, picked = $('question').value;
  for (const node of form.querySelectorAll('[data-modes]')) node.hidden = !node.dataset.modes.split(' ').includes(mode);
  $('text').placeholder = PLACEHOLDER[mode] ?? '';
  options($('question'), questions.map((q) => [q.id, `${q.topic} · ${q.marks} mark${q.marks === 1 ? '' : 's'} · ${(q.text ?? '').slice(0, 90)}`]),
          mode === 'mark' ? undefined : '(your own question below)');
  if (questions.some((q) => q.id === picked)) $('question').value = picked;
  store.set('mode', mode);
}

async function loadSubject() {
  const subject = $('subject').value;
  if (!subject) return;
  store.set('subject', subject);
  questions = [];
  try {
    const info = await getJSON(`v1/tutor/subjects/${encodeURIComponent(subject)}`);
    questions = info.questions ?? [];
    options($('type'), (info.types ?? []).map((t) => [t.id, t.name ?? t.id]));
    options($('topic'), (info.topics ?? []).map((t) => [t, t]), '(any topic)');
    $('rag').disabled = !info.knowledge_base;
    $('rag').parentElement.title = info.knowledge_base ? "Put the subject's notes and worked examples into the prompt"
      : `No knowledge base for ${subject}: tutor --subject ${subject} kb build`;
    status('');
  } catch (err) {
    status(`${subject}: ${err.message}`, true);
  }
  showMode();
}

async function loadSubjects() {
  try {
    const { data } = await getJSON('v1/models');
    const subjects = [...new Set(data.map((m) => m.subject).filter(Boolean))].sort();
    options($('subject'), subjects.map((s) => [s, s]));
    if (subjects.includes(store.get('subject'))) $('subject').value = store.get('subject');
    if (!subjects.length) status('The server has no subject adapters.', true);
    await loadSubject();
  } catch (err) {
    status(err.message, true);
    $('settings').open = true;
  }
}

function parseResults(text) {  // plan rows: CSV `question_id,marks,out_of` or JSON lines; a CSV header is skipped
  return text.split('\n').map((l) => l.trim()).filter(Boolean).flatMap((line, i) => {
    if (line.startsWith('{')) {
      try { return [JSON.parse(line)]; } catch { throw new Error(`line ${i + 1} is not JSON: ${line}`); }
    }
    const [id, marks, outOf] = line.split(',').map((s) => s.trim());
    if (i === 0 && Number.isNaN(Number(marks))) return [];
    if (!id || Number.isNaN(Number(marks))) throw new Error(`line ${i + 1} is not question_id,marks,out_of: ${line}`);
    return [{ question_id: id, marks: Number(marks), ...(outOf ? { out_of: Number(outOf) } : {}) }];
  });
}

/** The knowledge-base switch, sent only where the subject has one (elsewhere the server's default, off, holds). */
function rag() {
  return $('rag').disabled ? {} : { rag: $('rag').checked };
}

/** What to send for the form's mode, and how to show it in the log. */
function request() {
  const subject = $('subject').value, mode = $('mode').value, text = $('text').value.trim();
  const picked = questions.find((q) => q.id === $('question').value);
  if (mode === 'answer' || mode === 'explain') {
    if (!picked && !text) throw new Error('Type a question or pick one.');
    return { ask: picked ? picked.text : text,
             body: { subject, ...(picked ? { question_id: picked.id } : { text }), diagrams: $('diagrams').checked, ...rag() } };
  }
  if (mode === 'mark') {
    if (!picked || !text) throw new Error('Pick a question and type the answer to mark.');
    return { ask: `${picked.text.slice(0, 120)} — answer: ${text}`, body: { subject, question_id: picked.id, answer: text, ...rag() } };
  }
  if (mode === 'set') {
    const topic = $('topic').value;
    return { ask: `${$('type').selectedOptions[0]?.text ?? 'a question'}${topic ? ` on ${topic}` : ''}`,
             body: { subject, type: $('type').value, ...(topic ? { topic } : {}), count: 1 } };
  }
  const results = parseResults(text);
  if (!results.length) throw new Error('Give at least one result: question_id,marks,out_of');
  const days = Number($('days').value) || 7;
  return { ask: `a ${days}-day plan from ${results.length} result${results.length === 1 ? '' : 's'}`, body: { subject, results, days } };
}

/** answer/explain: the reply grows as its pieces arrive, painted at most once a frame. */
async function stream(entry, body, payload) {
  controller = new AbortController();
  $('stop').disabled = false;
  const response = await api(`v1/tutor/${entry.mode}`, { ...payload, stream: true }, controller.signal);
  if (!response.headers.get('content-type')?.includes('text/event-stream')) {  // a server that answered in one piece
    entry.result = await response.json();
    entry.text = entry.result.text;
    return;
  }
  let queued = false;
  const frame = () => { queued = false; paint(body, entry); follow(); };
  for await (const data of events(response)) {
    if (data === '[DONE]') break;
    const event = JSON.parse(data);
    if (event.error) throw new Error(event.error.message);
    if (event.delta) {
      entry.text += event.delta;
      if (!queued) { queued = true; requestAnimationFrame(frame); }
    }
    if (event.result) {
      entry.result = event.result;
      entry.text = event.result.text;
    }
  }
}

async function send(event) {
  event.preventDefault();
  if (controller || $('send').disabled) return;
  let ask;
  try {
    ask = request();
  } catch (err) {
    status(err.message, true);
    return;
  }
  status('');
  const entry = { mode: $('mode').value, subject: ask.body.subject, ask: ask.ask, text: '' };
  const body = turn(entry);
  follow();
  $('send').disabled = true;
  try {
    if (entry.mode === 'answer' || entry.mode === 'explain') await stream(entry, body, ask.body);
    else entry.result = await getJSON(`v1/tutor/${entry.mode}`, ask.body);
  } catch (err) {
    if (err.name === 'AbortError') entry.stopped = true;
    else entry.error = err.message;
  } finally {
    controller = null;
    $('stop').disabled = true;
    $('send').disabled = false;
  }
  paint(body, entry);
  remember(entry);
  follow();
}

// --- Start --------------------------------------------------------------------------------------

$('key').value = store.get('key', '');
$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  store.set('key', $('key').value.trim());
  $('settings').open = false;
  loadSubjects();
});
$('clear').addEventListener('click', () => {
  if (!history.length || !confirm('Clear the conversation history kept in this browser?')) return;
  history = [];
  store.set('history', history);
  log.replaceChildren();
});
$('stop').addEventListener('click', () => controller?.abort());
$('subject').addEventListener('change', loadSubject);
$('mode').addEventListener('change', showMode);
form.addEventListener('submit', send);
$('text').addEventListener('keydown', (event) => {  // Ctrl/Cmd+Enter sends
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});

$('mode').value = store.get('mode', 'answer');
if (!$('mode').value) $('mode').value = 'answer';  // a mode this version does not have
showMode();
for (const entry of history) turn(entry);
follow();
// For tests and the curious: the rendering path and the log, from the console.
window.tutor = { render: (text) => { const div = el('div'); div.append(render(text)); return div.innerHTML; }, addEntry, api };
loadSubjects();
