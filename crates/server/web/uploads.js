// The upload tray: a queue of files (three in flight), each with its bar,
// and an overall bar with speed and time left.

import { ApiError, files as filesApi, formatBytes, join } from './api.js';
import { Upload } from './tus.js';

const PARALLEL = 3;
const $ = (id) => document.getElementById(id);

function duration(secs) {
  if (!Number.isFinite(secs) || secs < 0) return '';
  if (secs < 60) return `${Math.ceil(secs)} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ${Math.ceil(secs % 60)} s`;
  return `${Math.floor(secs / 3600)} h ${Math.round((secs % 3600) / 60)} min`;
}

export class Uploads {
  constructor({ onDone, toast, maxSize }) {
    this.onDone = onDone;
    this.toast = toast;
    this.maxSize = maxSize;
    this.items = [];
    this.active = 0;
    this.samples = [];
    $('up-clear').addEventListener('click', () => this.clearFinished());
    $('up-toggle').addEventListener('click', () => this.collapse(!$('uploads').classList.contains('collapsed')));
    setInterval(() => this.renderOverall(), 500);
  }

  /// `entries`: [{file, rel}] where `rel` is the path below `folder`
  /// ("a.txt" or "Photos/2026/b.jpg"); `emptyDirs`: folders to create.
  async add(folder, entries, emptyDirs = []) {
    for (const dir of emptyDirs) {
      try {
        await filesApi.mkdir(join(folder, dir));
      } catch (e) {
        if (!(e instanceof ApiError && e.code === 'already_exists')) this.toast(e.message, true);
      }
    }
    for (const { file, rel } of entries) {
      const item = { file, path: join(folder, rel), sent: 0, state: 'queued', upload: null, el: null };
      if (this.maxSize && file.size > this.maxSize) {
        item.state = 'failed';
        item.message = `Too large: this server accepts files up to ${formatBytes(this.maxSize)}.`;
      }
      this.items.push(item);
      this.renderItem(item);
    }
    $('uploads').hidden = false;
    this.collapse(false);
    this.pump();
  }

  /// The tray folds to its header (overall bar and counts) when asked, and
  /// by itself once everything is done, so it does not cover the list.
  collapse(yes) {
    $('uploads').classList.toggle('collapsed', yes);
    $('up-toggle').textContent = yes ? 'Show' : 'Hide';
    $('up-toggle').setAttribute('aria-expanded', String(!yes));
  }

  pump() {
    while (this.active < PARALLEL) {
      const next = this.items.find((i) => i.state === 'queued');
      if (!next) break;
      this.start(next);
    }
    this.renderOverall();
  }

  async start(item) {
    this.active += 1;
    item.state = 'running';
    item.started = performance.now();
    item.upload = new Upload(item.file, item.path, (sent) => {
      const delta = sent - item.sent;
      item.sent = sent;
      if (delta > 0) this.samples.push([performance.now(), delta]);
      item.retrying = false;
      this.renderItem(item);
      // The overall line keeps pace with the files (at most 5 times a second).
      if (performance.now() - (this.overallAt || 0) > 200) this.renderOverall();
    });
    item.upload.onRetry = (e) => { item.retrying = e.message; this.renderItem(item); };
    this.renderItem(item);
    try {
      const res = await item.upload.run();
      item.state = 'done';
      item.sent = item.file.size;
      item.landed = res.path || item.path;
      this.onDone(item.landed);
    } catch (e) {
      if (e.name === 'AbortError') {
        item.state = 'cancelled';
      } else {
        item.state = 'failed';
        item.message = e.message;
        if (!(e instanceof ApiError && e.status === 401)) this.toast(`${item.file.name}: ${e.message}`, true);
      }
    } finally {
      this.active -= 1;
      this.renderItem(item);
      this.pump();
      const busy = this.items.some((i) => i.state === 'running' || i.state === 'queued');
      const trouble = this.items.some((i) => i.state === 'failed');
      if (!busy && !trouble) this.collapse(true);
    }
  }

  cancel(item) {
    if (item.state === 'running') item.upload.cancel();
    else if (item.state === 'queued') { item.state = 'cancelled'; this.renderItem(item); }
    this.renderOverall();
  }

  busy() {
    return this.items.some((i) => i.state === 'running' || i.state === 'queued');
  }

  /// Cancels everything under way and empties the tray (on sign-out).
  cancelAll() {
    for (const i of this.items) this.cancel(i);
    for (const i of this.items) i.el.remove();
    this.items = [];
    $('uploads').hidden = true;
  }

  retry(item) {
    item.state = 'queued';
    item.message = '';
    this.renderItem(item);
    this.pump();
  }

  clearFinished() {
    this.items = this.items.filter((i) => {
      const keep = i.state === 'queued' || i.state === 'running';
      if (!keep) i.el.remove();
      return keep;
    });
    if (this.items.length === 0) $('uploads').hidden = true;
    this.renderOverall();
  }

  renderItem(item) {
    if (!item.el) {
      const li = document.createElement('li');
      const name = document.createElement('span');
      name.className = 'fname';
      name.textContent = item.path;
      name.title = item.path;
      const btn = document.createElement('button');
      btn.type = 'button';
      const bar = document.createElement('progress');
      bar.max = 1;
      const stat = document.createElement('span');
      stat.className = 'stat';
      li.append(name, btn, bar, stat);
      btn.addEventListener('click', () => {
        if (item.state === 'failed' || item.state === 'cancelled') this.retry(item); else this.cancel(item);
      });
      item.el = li;
      $('up-list').append(li);
    }
    const [, btn, bar, stat] = item.el.children;
    const size = item.file.size;
    item.el.className = item.state;
    item.el.dataset.path = item.path;
    bar.value = size ? item.sent / size : (item.state === 'done' ? 1 : 0);
    bar.setAttribute('aria-label', `Upload of ${item.file.name}`);
    btn.hidden = item.state === 'done';
    btn.textContent = item.state === 'failed' || item.state === 'cancelled' ? 'Retry' : 'Cancel';
    btn.setAttribute('aria-label', `${btn.textContent} ${item.file.name}`);
    switch (item.state) {
      case 'queued': stat.textContent = `Waiting · ${formatBytes(size)}`; break;
      case 'running': {
        const secs = (performance.now() - item.started) / 1000;
        const rate = secs > 0.5 ? item.sent / secs : 0;
        const left = rate > 0 ? (size - item.sent) / rate : NaN;
        stat.textContent = item.retrying
          ? `Connection lost, retrying… ${formatBytes(item.sent)} of ${formatBytes(size)} kept`
          : `${formatBytes(item.sent)} of ${formatBytes(size)}${rate ? ` · ${formatBytes(rate)}/s · ${duration(left)} left` : ''}`;
        break;
      }
      case 'done': stat.textContent = item.landed && item.landed !== item.path ? `Done · saved as ${item.landed}` : `Done · ${formatBytes(size)}`; break;
      case 'cancelled': stat.textContent = 'Cancelled'; break;
      default: stat.textContent = item.message || 'Failed';
    }
  }

  renderOverall() {
    this.overallAt = performance.now();
    const live = this.items.filter((i) => i.state !== 'cancelled' && i.state !== 'failed');
    const total = live.reduce((a, i) => a + i.file.size, 0);
    const sent = live.reduce((a, i) => a + Math.min(i.sent, i.file.size), 0);
    const done = this.items.filter((i) => i.state === 'done').length;
    const failed = this.items.filter((i) => i.state === 'failed').length;
    const running = this.items.some((i) => i.state === 'running' || i.state === 'queued');
    const now = performance.now();
    this.samples = this.samples.filter(([t]) => now - t < 5000);
    const window = this.samples.length ? Math.max(1, (now - this.samples[0][0]) / 1000) : 1;
    const rate = this.samples.reduce((a, [, d]) => a + d, 0) / window;
    const bar = $('up-overall');
    bar.value = total ? sent / total : (running ? 0 : 1);
    bar.setAttribute('aria-label', 'All uploads');
    $('up-title').textContent = running
      ? `Uploading ${this.items.length - done - failed} of ${this.items.length}`
      : `${done} upload${done === 1 ? '' : 's'} complete${failed ? `, ${failed} failed` : ''}`;
    $('up-stats').textContent = running
      ? `${formatBytes(sent)} of ${formatBytes(total)}${rate > 0 ? ` · ${formatBytes(rate)}/s · ${duration((total - sent) / rate)} left` : ''}`
      : `${formatBytes(sent)} uploaded`;
    for (const i of this.items) if (i.state === 'running') this.renderItem(i);
  }
}

/// Files and folders from a drop: walks dropped folders (entries API).
/// Items are read before the first await: the browser empties the
/// DataTransfer once the drop event has been handled.
export async function fromDrop(dataTransfer) {
  const roots = [];
  for (const item of dataTransfer.items || []) {
    if (item.kind !== 'file') continue;
    const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    roots.push({ entry, file: item.getAsFile() });
  }
  if (roots.length === 0 && dataTransfer.files) for (const file of dataTransfer.files) roots.push({ entry: null, file });
  const out = [];
  const dirs = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      out.push({ file, rel: prefix + entry.name });
      return;
    }
    if (entry.isDirectory) {
      const rel = prefix + entry.name;
      dirs.push(rel);
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child, `${rel}/`);
      }
    }
  };
  for (const { entry, file } of roots) {
    if (entry && entry.isDirectory) { await walk(entry, ''); continue; }
    if (file) { out.push({ file, rel: file.name }); continue; }
    if (entry) { try { await walk(entry, ''); } catch { /* unreadable: skipped */ } }
  }
  return { entries: out, emptyDirs: emptyOnly(dirs, out) };
}

/// Files from an <input type=file> (with webkitdirectory, each carries its
/// relative path).
export function fromInput(fileList) {
  const entries = [...fileList].map((file) => ({ file, rel: file.webkitRelativePath || file.name }));
  return { entries, emptyDirs: [] };
}

/// Folders with no file anywhere below: uploads create the others.
function emptyOnly(dirs, entries) {
  const used = new Set();
  for (const { rel } of entries) {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) used.add(parts.slice(0, i).join('/'));
  }
  return dirs.filter((d) => !used.has(d));
}
