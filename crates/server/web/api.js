// Calls to the server's JSON API, signed in by the session cookie. Every
// request carries X-Tessera-Web: the server refuses cookie-signed writes
// without it, which is what keeps other sites from forging them.

export const API = '/api/v1';
export const WEB_HEADERS = { 'X-Tessera-Web': '1' };

export class ApiError extends Error {
  constructor(status, code, message, detail = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/// Listeners told when the session is gone (401), so the app shows sign-in.
const unauthorizedListeners = new Set();
export function onUnauthorized(fn) { unauthorizedListeners.add(fn); }

/// Sizes in binary units (1 KiB = 1024 B) with one decimal, dropped when
/// it is .0, so "50 GiB" and "1.2 MiB" read the way people write them.
export function formatBytes(n) {
  if (n == null) return '';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  // Rounded first, so that 1023.96 KiB does not show as "1024 KiB".
  let shown = Math.round(v * 10) / 10;
  if (shown >= 1024 && i < units.length - 1) { shown = Math.round(shown / 102.4) / 10; i++; }
  return `${Number.isInteger(shown) ? shown : shown.toFixed(1)} ${units[i]}`;
}

/// A message a person can act on, for a status and the server's error body.
export function explain(status, body, headers) {
  const err = body && body.error ? body.error : {};
  const code = err.code || '';
  const server = err.message || '';
  switch (status) {
    case 0:
      return 'Cannot reach the server. Check your connection; Tessera will retry.';
    case 401:
      return 'Your session has ended. Please sign in again.';
    case 403:
      return `Not allowed: ${server || 'this request was refused'}.`;
    case 404:
      return server ? `Not found: ${server}.` : 'Not found: it may have been moved or deleted elsewhere.';
    case 409:
      if (code === 'conflict') {
        return `This file was changed elsewhere${err.current_rev ? ` (it is at revision ${err.current_rev} now)` : ''}. Reload and try again.`;
      }
      if (code === 'already_exists') return `An item with that name already exists here. ${server}`;
      return server || 'This conflicts with the current state of your files. Reload and try again.';
    case 413:
      return `Too large for this server: ${server || 'the file is over the size limit'}.`;
    case 429: {
      const wait = headers && headers.get && headers.get('Retry-After');
      return `Too many attempts. Wait ${wait ? `${wait} seconds` : 'a little'} and try again.`;
    }
    case 507:
      // The account's own limit: the server's words name the sizes involved.
      if (code === 'quota_exceeded' && server) return `${server.charAt(0).toUpperCase()}${server.slice(1)}`.replace(/\.?$/, '.');
      return "The server's storage is full. Free some space (empty the trash) or ask the administrator.";
    default:
      if (status >= 500) return `The server had a problem (${status}). Try again in a moment.`;
      return server || `The request failed (${status}).`;
  }
}

export async function errorFrom(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const code = body && body.error ? body.error.code : `http_${res.status}`;
  const e = new ApiError(res.status, code, explain(res.status, body, res.headers), body ? body.error : {});
  // Seconds the server asks to wait (429, 503), if it said.
  const wait = Number.parseInt((res.headers && res.headers.get && res.headers.get('Retry-After')) || '', 10);
  e.retryAfter = Number.isFinite(wait) && wait >= 0 ? wait : null;
  if (res.status === 401) for (const fn of unauthorizedListeners) fn(e);
  return e;
}

export function url(path, query) {
  const u = new URL(API + path, location.origin);
  if (query) {
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null) u.searchParams.set(k, String(v));
    }
  }
  return u.pathname + u.search;
}

export async function api(method, path, { query, json, headers, signal, raw } = {}) {
  const h = { ...WEB_HEADERS, ...(headers || {}) };
  let body;
  if (json !== undefined) {
    h['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(url(path, query), { method, headers: h, body, signal, credentials: 'same-origin', cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', explain(0));
  }
  if (!res.ok) throw await errorFrom(res);
  if (raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get('Content-Type') || '';
  return type.includes('json') ? res.json() : res;
}

export const files = {
  list: (path) => api('GET', '/files/list', { query: { path } }),
  meta: (path) => api('GET', '/files/meta', { query: { path } }),
  mkdir: (path) => api('POST', '/files/mkdir', { json: { path } }),
  move: (from, to) => api('POST', '/files/move', { json: { from, to } }),
  remove: (path) => api('POST', '/files/delete', { json: { path } }),
  revisions: (path) => api('GET', '/files/revisions', { query: { path } }),
  restore: (path, rev) => api('POST', '/files/restore', { json: { path, rev } }),
  pin: (path, rev, pinned) => api('POST', '/files/pin', { json: { path, rev, pinned } }),
  viewUrl: (path, rev) => url('/files/view', { path, rev }),
  downloadUrl: (path, rev) => url('/files/view', { path, rev, download: 1 }),
  zipUrl: (path) => url('/files/zip', { path }),
  /// Names holding `q` in any case, shortest first, across one's files and
  /// the folders shared with one (trash left out): `{entries, more}`.
  search: (q, limit) => api('GET', '/search', { query: { q, limit } }),
};

export const trash = {
  list: () => api('GET', '/trash'),
  restore: (id, to) => api('POST', '/trash/restore', { json: to ? { id, to } : { id } }),
  purge: (id) => api('POST', '/trash/purge', { json: { id } }),
  // Only what was deleted by `upto` (the newest entry shown), so nothing
  // deleted since on another device goes unseen.
  empty: (upto) => api('POST', '/trash/purge', { json: { all: true, deleted_upto_ms: upto } }),
};

export const links = {
  list: () => api('GET', '/links'),
  create: (path, expiresInSecs, password, uploadOnly = false) => api('POST', '/links', {
    json: { path, upload_only: uploadOnly, ...(expiresInSecs ? { expires_in_secs: expiresInSecs } : {}), ...(password ? { password } : {}) },
  }),
  revoke: (id) => api('DELETE', `/links/${encodeURIComponent(id)}`),
};

/// Shared folders: a folder at the top of one's files shared with other
/// users as editors or viewers. Each is `{id, path, role, owner, members}`,
/// `path` being where it is in the caller's files and `role` theirs.
export const shares = {
  list: () => api('GET', '/shares'),
  share: (path, username, role) => api('POST', '/shares', { json: { path, with: username, role } }),
  setRole: (id, username, role) => api('PUT', `/shares/${encodeURIComponent(id)}/members/${encodeURIComponent(username)}`, { json: { role } }),
  /// The owner removing a member, or a member naming themself to leave.
  remove: (id, username) => api('DELETE', `/shares/${encodeURIComponent(id)}/members/${encodeURIComponent(username)}`),
  unshare: (id) => api('DELETE', `/shares/${encodeURIComponent(id)}`),
};

export const account = {
  /// `{user, used_bytes, quota_bytes}`; `quota_bytes` is null without a quota.
  usage: () => api('GET', '/usage'),
  /// `{devices: [{id, name, client, signed_in_ms, last_seen_ms, polls, current}]}`.
  devices: () => api('GET', '/devices'),
  signOutDevice: (id) => api('DELETE', `/devices/${encodeURIComponent(id)}`),
  /// `{signed_out}`: the other devices signed out (this one too when asked,
  /// and the server then clears the session cookie).
  changePassword: (current, next, signOutHere) => api('POST', '/account/password', {
    json: { current_password: current, new_password: next, sign_out_here: signOutHere },
  }),
};

/// Accounts, for administrators (403 for everyone else). An account is
/// `{name, admin, state, created_ms, deleted_ms, purge_after_ms, used_bytes,
/// quota_bytes, devices, last_seen_ms}`.
const userPath = (name, rest = '') => `/admin/users/${encodeURIComponent(name)}${rest}`;
export const admin = {
  users: () => api('GET', '/admin/users'),
  addUser: (name, password, isAdmin) => api('POST', '/admin/users', { json: { name, password, admin: isAdmin } }),
  disable: (name) => api('POST', userPath(name, '/disable')),
  enable: (name) => api('POST', userPath(name, '/enable')),
  remove: (name) => api('DELETE', userPath(name)),
  restore: (name) => api('POST', userPath(name, '/restore')),
  resetPassword: (name, password) => api('PUT', userPath(name, '/password'), { json: { password } }),
  setQuota: (name, quotaBytes) => api('PUT', userPath(name, '/quota'), { json: { quota_bytes: quotaBytes } }),
};

/// The server's own words for a refusal, as a sentence. explain() speaks of
/// files ("an item with that name…"); about accounts and passwords the
/// server's message is the one that says what went wrong. `names` are user
/// names the message may start with: those keep their case.
export function serverSaid(e, ...names) {
  const said = e && e.detail && e.detail.message;
  if (!(e instanceof ApiError) || !said || e.status < 400 || e.status >= 500 || e.status === 401 || e.status === 429) {
    return (e && e.message) || String(e);
  }
  const named = names.some((n) => n && said.startsWith(`${n} `));
  const text = named ? said : said.charAt(0).toUpperCase() + said.slice(1);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

export function parentOf(path) {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

export function join(folder, name) {
  return folder === '/' ? `/${name}` : `${folder}/${name}`;
}

export function nameOf(path) {
  return path.slice(path.lastIndexOf('/') + 1);
}
