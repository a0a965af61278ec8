// A small TUS 1.0 client (core, creation, termination) for the browser.
// The upload URL is kept in localStorage under the target path, size and
// modification time, so choosing the same file again after a reload or a
// crash continues where the server stopped instead of starting over.

import { API, ApiError, WEB_HEADERS, errorFrom, explain } from './api.js';

const TUS = `${API}/tus/`;
const CHUNK = 8 << 20;
const STORE_PREFIX = 'tessera.tus:';
/// Longest wait between retries after a dropped connection.
const MAX_RETRY_MS = 30_000;
/// A request that sends nothing for this long is given up and retried: a
/// connection can die without an error (a phone changing networks).
const STALL_MS = 30_000;

function b64(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

export function storeKey(path, file) {
  return `${STORE_PREFIX}${path}\u0000${file.size}\u0000${file.lastModified}`;
}

/// Uploads that were started and never finished (for a "choose the files
/// again to resume" note after a reload): `[{key, path, url}]`.
export function unfinished() {
  const out = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (key && key.startsWith(STORE_PREFIX)) {
      out.push({ key, path: key.slice(STORE_PREFIX.length).split('\u0000')[0], url: localStorage.getItem(key) });
    }
  }
  return out;
}

/// Gives up the interrupted uploads: the server drops what it kept.
export function forgetUnfinished() {
  for (const u of unfinished()) {
    localStorage.removeItem(u.key);
    if (u.url) fetch(u.url, { method: 'DELETE', headers: { ...WEB_HEADERS, 'Tus-Resumable': '1.0.0' } }).catch(() => {});
  }
}

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const t = setTimeout(resolve, ms);
  const again = () => { clearTimeout(t); resolve(); };
  window.addEventListener('online', again, { once: true });
  signal?.addEventListener('abort', () => { clearTimeout(t); reject(new DOMException('cancelled', 'AbortError')); }, { once: true });
});

/// True when the server has no TUS endpoint (an older server): the caller
/// then uses the simple streamed upload.
let tusMissing = false;

export class Upload {
  /// `onProgress(sentBytes)` is called as bytes leave the browser.
  constructor(file, path, onProgress) {
    this.file = file;
    this.path = path;
    this.onProgress = onProgress;
    this.controller = new AbortController();
    this.xhr = null;
    this.location = null;
    this.result = null;
  }

  cancel() {
    this.controller.abort();
    if (this.xhr) this.xhr.abort();
    const loc = this.location;
    localStorage.removeItem(storeKey(this.path, this.file));
    if (loc) {
      fetch(loc, { method: 'DELETE', headers: { ...WEB_HEADERS, 'Tus-Resumable': '1.0.0' } }).catch(() => {});
    }
  }

  get cancelled() { return this.controller.signal.aborted; }

  /// Runs to completion: retries dropped connections with exponential
  /// backoff and full jitter, resuming from the server's offset. Resolves
  /// with `{path, rev}`; rejects with an ApiError the server gave, or an
  /// AbortError when cancelled.
  async run() {
    if (this.file.size === 0 || tusMissing) return this.simple();
    let failures = 0;
    for (;;) {
      try {
        return await this.attempt();
      } catch (e) {
        if (this.cancelled || e.name === 'AbortError') throw new DOMException('cancelled', 'AbortError');
        if (e instanceof ApiError && e.code === 'tus_missing') { tusMissing = true; return this.simple(); }
        // Only a lost connection or a busy server is worth another try.
        const retry = e instanceof ApiError && (e.status === 0 || e.status === 502 || e.status === 503 || e.status === 504);
        if (!retry) throw e;
        failures += 1;
        const cap = Math.min(MAX_RETRY_MS, 1000 * 2 ** failures);
        this.onRetry?.(e);
        await sleep(Math.random() * cap, this.controller.signal);
      }
    }
  }

  async attempt() {
    const key = storeKey(this.path, this.file);
    let offset = null;
    this.location = localStorage.getItem(key);
    if (this.location) offset = await this.head();
    if (offset === null) {
      this.location = await this.create();
      localStorage.setItem(key, this.location);
      offset = 0;
    }
    this.onProgress(offset);
    for (;;) {
      const end = Math.min(offset + CHUNK, this.file.size);
      const res = await this.patch(offset, this.file.slice(offset, end));
      offset = res.offset;
      this.onProgress(offset);
      if (res.path) {
        localStorage.removeItem(key);
        this.result = { path: res.path, rev: res.rev };
        return this.result;
      }
      if (offset >= this.file.size) {
        // Completed without the commit headers: the server knows best.
        localStorage.removeItem(key);
        this.result = { path: this.path, rev: null };
        return this.result;
      }
    }
  }

  async request(method, target, headers) {
    let res;
    try {
      res = await fetch(target, {
        method,
        headers: { ...WEB_HEADERS, 'Tus-Resumable': '1.0.0', ...headers },
        signal: this.controller.signal,
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network', explain(0));
    }
    return res;
  }

  /// The server's offset for a kept upload, or null if it has forgotten it.
  async head() {
    const res = await this.request('HEAD', this.location, {});
    if (res.status === 404 || res.status === 410 || res.status === 403) {
      localStorage.removeItem(storeKey(this.path, this.file));
      return null;
    }
    if (!res.ok) throw await errorFrom(res);
    const offset = Number(res.headers.get('Upload-Offset'));
    return Number.isFinite(offset) ? offset : null;
  }

  async create() {
    const res = await this.request('POST', TUS, {
      'Upload-Length': String(this.file.size),
      'Upload-Metadata': `path ${b64(this.path)},filename ${b64(this.file.name)}`,
    });
    if (res.status === 404 || res.status === 405) {
      throw new ApiError(404, 'tus_missing', 'resumable uploads are not available');
    }
    if (!res.ok) throw await errorFrom(res);
    const loc = res.headers.get('Location');
    if (!loc) throw new ApiError(500, 'internal', 'The server did not say where to send the upload.');
    return new URL(loc, location.origin).pathname;
  }

  /// One PATCH through XMLHttpRequest, which (unlike fetch) reports upload
  /// progress. Going offline or a stall ends it as a network failure, so
  /// that the retry loop resumes from the server's offset.
  patch(offset, blob) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      let dropped = false;
      let stall = null;
      const drop = () => { dropped = true; xhr.abort(); };
      const watch = () => { clearTimeout(stall); stall = setTimeout(drop, STALL_MS); };
      const done = () => { clearTimeout(stall); window.removeEventListener('offline', drop); this.xhr = null; };
      window.addEventListener('offline', drop);
      watch();
      xhr.open('PATCH', this.location);
      xhr.setRequestHeader('Tus-Resumable', '1.0.0');
      xhr.setRequestHeader('X-Tessera-Web', '1');
      xhr.setRequestHeader('Upload-Offset', String(offset));
      xhr.setRequestHeader('Content-Type', 'application/offset+octet-stream');
      xhr.upload.onprogress = (ev) => { watch(); this.onProgress(offset + ev.loaded); };
      xhr.onerror = () => { done(); reject(new ApiError(0, 'network', explain(0))); };
      xhr.onabort = () => {
        done();
        reject(dropped ? new ApiError(0, 'network', explain(0)) : new DOMException('cancelled', 'AbortError'));
      };
      xhr.onload = async () => {
        done();
        if (xhr.status === 204 || xhr.status === 200 || xhr.status === 201) {
          const landed = xhr.getResponseHeader('Tessera-Path');
          let path = landed;
          // Sent percent-encoded, as paths may hold any Unicode.
          try { path = landed && decodeURIComponent(landed); } catch { /* keep as sent */ }
          resolve({
            offset: Number(xhr.getResponseHeader('Upload-Offset') ?? offset + blob.size),
            path,
            rev: xhr.getResponseHeader('Tessera-Rev'),
          });
          return;
        }
        if (xhr.status === 409) {
          // Offsets disagree (a retried chunk had landed): ask and go on.
          reject(new ApiError(0, 'offset', 'resync'));
          return;
        }
        reject(await errorFrom(new Response(xhr.response, { status: xhr.status, headers: { 'Content-Type': 'application/json', 'Retry-After': xhr.getResponseHeader('Retry-After') || '' } })));
      };
      xhr.send(blob);
    });
  }

  /// The simple upload (one streamed PUT): empty files, and servers without TUS.
  simple() {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open('PUT', `${API}/files/content?path=${encodeURIComponent(this.path)}`);
      xhr.setRequestHeader('X-Tessera-Web', '1');
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.upload.onprogress = (ev) => this.onProgress(ev.loaded);
      xhr.onerror = () => reject(new ApiError(0, 'network', explain(0)));
      xhr.onabort = () => reject(new DOMException('cancelled', 'AbortError'));
      xhr.onload = async () => {
        if (xhr.status === 201 || xhr.status === 200) {
          let entry = {};
          try { entry = JSON.parse(xhr.responseText); } catch { /* keep defaults */ }
          this.onProgress(this.file.size);
          resolve({ path: entry.path || this.path, rev: entry.rev ?? null });
          return;
        }
        reject(await errorFrom(new Response(xhr.response, { status: xhr.status, headers: { 'Content-Type': 'application/json' } })));
      };
      xhr.send(this.file);
    });
  }
}
