// The web UI: sign-in, the file list (browse, sort, create, rename, move,
// delete), search by name, the trash, revisions (and pins), previews,
// uploads, live updates the storage used against the quota, shared folders,
// one's account (password, devices) and, for administrators, the users.

import { API, ApiError, WEB_HEADERS, account, admin, api, errorFrom, files, formatBytes, join, links, nameOf, onUnauthorized, parentOf, serverSaid, shares, trash } from './api.js';
import { Live } from './live.js';
import { openPreview } from './preview.js';
import { forgetUnfinished, unfinished } from './tus.js';
import { Uploads, fromDrop, fromInput } from './uploads.js';

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
};

const state = {
  view: 'files',
  folder: '/',
  entries: [],
  trash: [],
  sort: JSON.parse(localStorage.getItem('tessera.sort') || '{"key":"name","dir":1}'),
  maxSize: 0,
  flash: new Set(),
  /// Paths picked with the checkboxes (this folder only).
  selected: new Set(),
  /// The shared folders the user has, by where they are in their files.
  shares: new Map(),
  /// The signed-in user's name.
  me: '',
  /// Whether they are an administrator: the server says so by letting
  /// them list the users.
  admin: false,
  /// The accounts, as an administrator last listed them.
  users: [],
};

let uploads = null;
const live = new Live(onChanges, (s) => {
  const dot = $('live');
  dot.className = `live ${s}`;
  dot.title = s === 'on' ? 'Live: changes appear as they happen' : 'Reconnecting…';
});

// ---------- messages ----------

let toastTimer = null;
function toast(message, isError = false) {
  const t = $('toast');
  t.textContent = message;
  t.className = isError ? 'toast err' : 'toast';
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, isError ? 8000 : 3500);
}

async function attempt(fn, okMessage) {
  try {
    const r = await fn();
    if (okMessage) toast(okMessage);
    return r;
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) toast(e.message || String(e), true);
    return undefined;
  }
}

// ---------- sign in / out ----------

function showSignin(message = '') {
  live.stop();
  clearSearch();
  reveal = null;
  if ($('share').open) $('share').close();
  $('app').hidden = true;
  $('usage').hidden = true;
  // The next one to sign in may be someone else.
  state.admin = false;
  state.users = [];
  $('nav-users').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  $('signin-pass').value = '';
  $('signin-user').value ||= localStorage.getItem('tessera.user') || '';
  ($('signin-user').value ? $('signin-pass') : $('signin-user')).focus();
}

// Every request under way when a session ends answers 401: the first shows
// sign-in, and the others leave what it says there (a password changed here).
onUnauthorized(() => { if (!$('app').hidden) showSignin('Your session has ended. Please sign in again.'); });

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const username = $('signin-user').value.trim();
  const password = $('signin-pass').value;
  $('signin-error').textContent = '';
  const button = ev.submitter || $('signin-form').querySelector('button');
  button.disabled = true;
  try {
    const res = await fetch(`${API}/auth/login`, {
      method: 'POST',
      headers: { ...WEB_HEADERS, 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password, device: webDeviceName() }),
      credentials: 'same-origin',
    });
    if (!res.ok) {
      const e = await errorFrom(res);
      // A disabled account is told so in the server's words.
      $('signin-error').textContent = res.status === 401 ? 'Wrong username or password.' : serverSaid(e);
      return;
    }
    const body = await res.json();
    localStorage.setItem('tessera.user', body.username);
    state.me = body.username;
    await enterApp();
  } catch {
    $('signin-error').textContent = 'Cannot reach the server. Check your connection.';
  } finally {
    button.disabled = false;
  }
});

function browserName(ua) {
  if (/Firefox\//.test(ua)) return 'Firefox';
  if (/Edg\//.test(ua)) return 'Edge';
  if (/Chrom/.test(ua)) return 'Chrome';
  if (/Safari\//.test(ua)) return 'Safari';
  return null;
}

function webDeviceName() {
  return `Web browser (${browserName(navigator.userAgent) || 'browser'})`;
}

$('signout').addEventListener('click', async () => {
  if (uploads && uploads.busy()) {
    const ok = await dialog({ title: 'Sign out?', text: 'Uploads are still under way. Signing out cancels them.', ok: 'Sign out', danger: true });
    if (!ok) return;
  }
  uploads?.cancelAll();
  live.stop();
  try { await api('POST', '/auth/logout'); } catch { /* signed out either way */ }
  showSignin('You are signed out.');
});

// ---------- navigation ----------

function hashFor(folder) {
  return `#/files${folder === '/' ? '/' : folder.split('/').map(encodeURIComponent).join('/')}`;
}

function parseHash() {
  const h = location.hash.slice(1) || '/files/';
  if (h === '/trash') return { view: 'trash', folder: state.folder };
  if (h === '/account') return { view: 'account', folder: state.folder };
  if (h === '/users') return { view: 'users', folder: state.folder };
  let rest = h.startsWith('/files') ? h.slice('/files'.length) : '/';
  try { rest = rest.split('/').map(decodeURIComponent).join('/'); } catch { rest = '/'; }
  rest = rest.replace(/\/+$/, '') || '/';
  return { view: 'files', folder: rest.startsWith('/') ? rest : `/${rest}` };
}

window.addEventListener('hashchange', () => {
  const target = parseHash();
  state.view = target.view;
  state.folder = target.folder;
  state.selected.clear();
  if (reveal && (target.view !== 'files' || target.folder !== reveal.folder)) reveal = null;
  closePanel();
  refresh(true);
});

function go(folder) {
  location.hash = hashFor(folder);
}

// ---------- loading ----------

const NAV = [['nav-files', 'files'], ['nav-trash', 'trash'], ['nav-account', 'account'], ['nav-users', 'users']];

/// The files and the trash share the list; the account and the users have
/// pages of their own.
const listView = () => state.view === 'files' || state.view === 'trash';

let loadSeq = 0;
async function refresh(focusList = false) {
  const seq = ++loadSeq;
  for (const [id, view] of NAV) {
    if (state.view === view) $(id).setAttribute('aria-current', 'page');
    else $(id).removeAttribute('aria-current');
  }
  $('files-view').hidden = !listView();
  $('account-view').hidden = state.view !== 'account';
  $('users-view').hidden = state.view !== 'users';
  if (state.view === 'account') { await showAccount(focusList); return; }
  if (state.view === 'users') { await showUsers(focusList); return; }
  $('file-actions').hidden = state.view !== 'files';
  $('trash-actions').hidden = state.view !== 'trash';
  try {
    if (state.view === 'files') {
      const [res] = await Promise.all([files.list(state.folder), loadShares()]);
      if (seq !== loadSeq) return;
      state.entries = res.entries;
      renderFiles();
    } else {
      const res = await trash.list();
      if (seq !== loadSeq) return;
      state.trash = res.entries;
      renderTrash();
    }
    if (focusList) focusRow(0);
    if (reveal && state.view === 'files' && reveal.folder === state.folder) revealFile();
  } catch (e) {
    if (seq !== loadSeq) return;
    if (e instanceof ApiError && e.status === 401) return;
    if (e instanceof ApiError && (e.code === 'not_found' || e.code === 'not_a_folder') && state.folder !== '/') {
      toast(`${state.folder} is no longer there.`, true);
      go(parentOf(state.folder));
      return;
    }
    toast(e.message, true);
  }
}

let refreshTimer = null;
function refreshSoon() {
  // A change to the files leaves the account pages (and what is typed in
  // their forms) as they are.
  if (!listView()) return;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { if (listView()) refresh(); }, 120);
}

function onChanges(changes) {
  usageSoon();
  // Results on the screen follow the files, as the list does.
  if (!$('search-panel').hidden) searchSoon();
  if (!listView()) return;
  for (const c of changes) state.flash.add(c.path);
  const relevant = changes.length === 0 || changes.some((c) => state.view === 'trash'
    || parentOf(c.path) === state.folder
    || (c.old_path && parentOf(c.old_path) === state.folder)
    || c.path === state.folder || state.folder.startsWith(`${c.path}/`));
  if (relevant) refreshSoon();
  if (panelPath && changes.some((c) => c.path === panelPath || c.old_path === panelPath)) showRevisions(panelPath);
}

// ---------- storage used ----------

let usageSeq = 0;
async function refreshUsage() {
  const seq = ++usageSeq;
  let u;
  try {
    u = await account.usage();
  } catch {
    // Only a figure to read: the last one shown stays until the next try.
    return;
  }
  if (seq !== usageSeq) return;
  if (u.user) { state.me = u.user; renderWho(); }
  renderUsage(u.used_bytes, u.quota_bytes);
  renderAccountUsage(u.used_bytes, u.quota_bytes);
}

const COUNTS = 'Your files, their older revisions and the trash all count.';

/// The figure in the top bar, on every page.
function renderUsage(used, quota) {
  const bar = $('usage-bar');
  const box = $('usage');
  if (quota) {
    const share = used / quota;
    $('usage-text').textContent = `${formatBytes(used)} of ${formatBytes(quota)} used`;
    bar.value = Math.min(1, share);
    bar.hidden = false;
    box.title = `${share >= 1 ? 'Your storage quota is full' : `${Math.floor(share * 100)}% of your storage quota`}. ${COUNTS}`;
    box.classList.toggle('full', share >= 1);
  } else {
    $('usage-text').textContent = `${formatBytes(used)} used`;
    bar.hidden = true;
    box.title = `Storage used (no quota is set). ${COUNTS}`;
    box.classList.remove('full');
  }
  box.hidden = false;
}

/// The same figures on the account page, in words and with what is left.
function renderAccountUsage(used, quota) {
  const bar = $('account-usage-bar');
  if (quota) {
    const share = used / quota;
    $('account-usage-text').textContent = `${formatBytes(used)} of ${formatBytes(quota)} used`;
    bar.value = Math.min(1, share);
    bar.hidden = false;
    $('account-usage-hint').textContent = share >= 1
      ? `Your storage quota is full: uploads are refused until you free some space (empty the trash, delete files). ${COUNTS}`
      : `${Math.floor(share * 100)}% of your quota; ${formatBytes(quota - used)} left. ${COUNTS}`;
  } else {
    $('account-usage-text').textContent = `${formatBytes(used)} used, no quota`;
    bar.hidden = true;
    $('account-usage-hint').textContent = `No quota is set for your account. ${COUNTS}`;
  }
}

/// Several changes land together (a folder upload, an emptied trash): one
/// request after they settle.
let usageTimer = null;
function usageSoon() {
  clearTimeout(usageTimer);
  usageTimer = setTimeout(refreshUsage, 250);
}

// A quota the administrator changed shows when the user comes back to the
// tab: that change is not in the file journal the live updates follow.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible' || $('app').hidden) return;
  usageSoon();
  // Devices come and go elsewhere too (a sync starts, another one signs out).
  if (state.view === 'account') loadDevices();
});

// ---------- the file list ----------

function sortEntries(list) {
  const { key, dir } = state.sort;
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
  return [...list].sort((a, b) => {
    if (a.kind !== b.kind) return a.kind === 'folder' ? -1 : 1;
    let d = 0;
    if (key === 'size') d = (a.size ?? 0) - (b.size ?? 0);
    else if (key === 'modified') d = a.modified_ms - b.modified_ms;
    if (d === 0) d = collator.compare(a.name, b.name);
    return d * dir;
  });
}

function when(ms) {
  const d = new Date(ms);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay
    ? d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

function headCell(label, key, cls) {
  const active = state.sort.key === key;
  const arrow = active ? (state.sort.dir > 0 ? ' ↑' : ' ↓') : '';
  return el('th', { class: cls, scope: 'col', 'aria-sort': active ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none' },
    el('button', {
      type: 'button',
      text: label + arrow,
      onclick: () => {
        state.sort = { key, dir: active ? -state.sort.dir : 1 };
        localStorage.setItem('tessera.sort', JSON.stringify(state.sort));
        renderFiles();
      },
    }));
}

function renderCrumbs() {
  const nav = $('crumbs');
  nav.replaceChildren();
  if (state.view === 'trash') {
    nav.append(el('span', { 'aria-current': 'page', text: 'Trash' }));
    return;
  }
  const parts = state.folder === '/' ? [] : state.folder.slice(1).split('/');
  const items = [['My files', '/'], ...parts.map((p, i) => [p, `/${parts.slice(0, i + 1).join('/')}`])];
  items.forEach(([label, path], i) => {
    if (i > 0) nav.append(el('span', { class: 'sep', 'aria-hidden': 'true', text: '›' }));
    nav.append(i === items.length - 1
      ? el('span', { 'aria-current': 'page', text: label })
      : el('a', { href: hashFor(path), text: label }));
  });
}

const ICON_COLORS = { folder: '#f59e0b', image: '#10b981', video: '#8b5cf6', audio: '#ec4899', pdf: '#ef4444', archive: '#78716c', file: '#64748b' };

function iconKind(entry) {
  if (entry.kind === 'folder') return 'folder';
  const ext = entry.name.includes('.') ? entry.name.split('.').pop().toLowerCase() : '';
  if (['png', 'jpg', 'jpeg', 'gif', 'webp', 'svg', 'avif', 'bmp', 'ico', 'heic'].includes(ext)) return 'image';
  if (['mp4', 'webm', 'mov', 'm4v', 'ogv', 'mkv', 'avi'].includes(ext)) return 'video';
  if (['mp3', 'wav', 'flac', 'ogg', 'oga', 'm4a', 'aac', 'opus', 'weba'].includes(ext)) return 'audio';
  if (ext === 'pdf') return 'pdf';
  if (['zip', 'gz', 'tgz', 'tar', '7z', 'rar', 'xz', 'zst', 'bz2'].includes(ext)) return 'archive';
  return 'file';
}

/// A small drawn icon (no font or image needed): a folder, or a page with
/// its type's colour.
function fileIcon(entry) {
  const kind = iconKind(entry);
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 20 20');
  svg.setAttribute('width', '20');
  svg.setAttribute('height', '20');
  svg.setAttribute('aria-hidden', 'true');
  svg.classList.add('icon');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('fill', ICON_COLORS[kind]);
  path.setAttribute('d', kind === 'folder'
    ? 'M2 5a2 2 0 0 1 2-2h4l2 2h6a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2z'
    : 'M5 2h7l4 4v10a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2z');
  svg.append(path);
  if (kind !== 'folder') {
    const fold = document.createElementNS(ns, 'path');
    fold.setAttribute('fill', 'rgb(255 255 255 / .55)');
    fold.setAttribute('d', 'M12 2v4h4z');
    svg.append(fold);
  }
  return svg;
}

function renderFiles() {
  renderCrumbs();
  $('btn-zip').href = files.zipUrl(state.folder);
  $('btn-zip').textContent = state.folder === '/' ? 'Download all' : 'Download folder';
  const readOnly = !writableHere();
  $('btn-mkdir').hidden = readOnly;
  $('btn-upload').hidden = readOnly;
  $('btn-upload-folder').hidden = readOnly || !folderPicking;
  $('readonly-note').hidden = !readOnly;
  $('readonly-note').textContent = readOnly ? readOnlyText(state.folder) : '';
  const present = new Set(state.entries.map((e) => e.path));
  for (const p of [...state.selected]) if (!present.has(p)) state.selected.delete(p);
  const nameHead = headCell('Name', 'name', 'c-name');
  const all = el('input', {
    type: 'checkbox', class: 'pick', 'aria-label': 'Select all',
    onchange: (ev) => { setSelection(ev.target.checked ? state.entries.map((e) => e.path) : []); },
  });
  all.checked = state.entries.length > 0 && state.selected.size === state.entries.length;
  all.indeterminate = state.selected.size > 0 && !all.checked;
  nameHead.prepend(el('span', { class: 'head-pick' }, all));
  $('list-head').replaceChildren(
    nameHead,
    headCell('Size', 'size', 'c-size num'),
    headCell('Modified', 'modified', 'c-mod'),
    el('th', { class: 'c-more' }, el('span', { class: 'visually-hidden', text: 'Actions' })),
  );
  const focused = document.activeElement?.closest?.('tr')?.dataset.path;
  const rows = sortEntries(state.entries).map((e) => {
    const folder = e.kind === 'folder';
    const tr = el('tr', { tabindex: '-1', 'data-path': e.path, 'data-kind': e.kind, 'aria-label': `${folder ? 'Folder' : 'File'} ${e.name}` });
    const link = el('a', { href: folder ? hashFor(e.path) : files.viewUrl(e.path), text: e.name, title: e.name, tabindex: '-1' });
    if (!folder) link.addEventListener('click', (ev) => { ev.preventDefault(); preview(e); });
    const sub = el('div', { class: 'sub', text: folder ? when(e.modified_ms) : `${formatBytes(e.size)} · ${when(e.modified_ms)}` });
    const pick = el('input', {
      type: 'checkbox', class: 'pick', tabindex: '-1', 'aria-label': `Select ${e.name}`,
      onclick: (ev) => ev.stopPropagation(),
      onchange: (ev) => toggleSelected(e.path, ev.target.checked),
    });
    pick.checked = state.selected.has(e.path);
    tr.classList.toggle('selected', pick.checked);
    tr.setAttribute('aria-selected', String(pick.checked));
    tr.append(
      el('td', {}, el('div', { class: 'name' },
        pick,
        fileIcon(e),
        el('div', {}, link, sub),
        sharedBadge(e),
        e.pending ? el('span', { class: 'badge', title: 'An upload of a new version is under way', text: 'syncing' }) : null)),
      el('td', { class: 'num', text: folder ? '—' : formatBytes(e.size) }),
      el('td', { text: when(e.modified_ms), title: new Date(e.modified_ms).toLocaleString() }),
      el('td', {}, el('button', {
        type: 'button', class: 'more', 'aria-haspopup': 'menu', 'aria-label': `Actions for ${e.name}`, tabindex: '-1', text: '⋯',
        onclick: (ev) => { ev.stopPropagation(); openMenu(ev.currentTarget, e); },
      })),
    );
    tr.addEventListener('dblclick', () => open(e));
    tr.addEventListener('contextmenu', (ev) => { ev.preventDefault(); openMenu(tr.querySelector('.more'), e, ev.clientX, ev.clientY); });
    tr.addEventListener('keydown', (ev) => rowKey(ev, e, tr));
    tr.addEventListener('click', () => tr.focus());
    if (state.flash.has(e.path)) tr.classList.add('flash');
    return tr;
  });
  state.flash.clear();
  $('rows').replaceChildren(...rows);
  makeRowsTabbable();
  renderSelection();
  $('empty').hidden = rows.length > 0;
  $('empty').textContent = readOnly ? 'This folder is empty.' : 'This folder is empty. Drop files here or use Upload.';
  if (focused) {
    const again = [...$('rows').children].find((r) => r.dataset.path === focused);
    if (again) again.focus();
  }
}

/// One row is in the tab order at a time (roving tabindex); arrows move.
function makeRowsTabbable() {
  const rows = [...$('rows').children];
  const current = rows.find((r) => r === document.activeElement) || rows[0];
  for (const r of rows) r.tabIndex = r === current ? 0 : -1;
}

function focusRow(i) {
  const rows = [...$('rows').children];
  if (!rows.length) return;
  const r = rows[Math.max(0, Math.min(i, rows.length - 1))];
  for (const x of rows) x.tabIndex = -1;
  r.tabIndex = 0;
  r.focus();
}

function rowKey(ev, entry, tr) {
  const rows = [...$('rows').children];
  const i = rows.indexOf(tr);
  switch (ev.key) {
    case 'ArrowDown': ev.preventDefault(); focusRow(i + 1); break;
    case 'ArrowUp': ev.preventDefault(); focusRow(i - 1); break;
    case 'Home': ev.preventDefault(); focusRow(0); break;
    case 'End': ev.preventDefault(); focusRow(rows.length - 1); break;
    case 'Enter': ev.preventDefault(); if (state.view === 'files') open(entry); else openMenu(tr.querySelector('.more'), entry); break;
    case 'Backspace':
      if (state.view === 'files' && state.folder !== '/') { ev.preventDefault(); go(parentOf(state.folder)); }
      break;
    case 'F2': if (state.view === 'files' && writable(entry.path)) { ev.preventDefault(); rename(entry); } break;
    case ' ': if (state.view === 'files') { ev.preventDefault(); toggleSelected(entry.path, !state.selected.has(entry.path)); } break;
    case 'Escape': if (state.selected.size) { ev.preventDefault(); setSelection([]); } break;
    case 'Delete':
      ev.preventDefault();
      if (state.view !== 'files') purge(entry);
      else if (writable(entry.path)) remove(entry);
      break;
    case 'ContextMenu': ev.preventDefault(); openMenu(tr.querySelector('.more'), entry); break;
    default:
      if (ev.key === 'F10' && ev.shiftKey) { ev.preventDefault(); openMenu(tr.querySelector('.more'), entry); }
      if ((ev.key === 'a' || ev.key === 'A') && (ev.ctrlKey || ev.metaKey) && state.view === 'files') {
        ev.preventDefault();
        setSelection(state.entries.map((e) => e.path));
      }
  }
}

function open(entry) {
  if (entry.kind === 'folder') go(entry.path);
  else preview(entry);
}

function preview(entry) {
  const list = sortEntries(state.entries).filter((e) => e.kind === 'file');
  openPreview(entry, list);
}

// ---------- the actions menu ----------

let menuReturn = null;

function menuButton(label, fn, cls) {
  return el('button', { type: 'button', role: 'menuitem', class: cls, text: label, onclick: () => { closeMenu(); fn(); } });
}

function openMenu(anchor, entry, x, y) {
  const items = [];
  const item = (label, fn, cls) => items.push(menuButton(label, fn, cls));
  const link = (label, href) => items.push(el('a', { role: 'menuitem', href, download: '', text: label, onclick: () => closeMenu() }));
  if (state.view === 'trash') {
    item('Restore', () => restoreTrash(entry));
    item('Delete forever', () => purge(entry), 'danger');
  } else if (entry.kind === 'folder') {
    const canWrite = writable(entry.path);
    const member = entry.shared === 'editor' || entry.shared === 'viewer';
    item('Open', () => go(entry.path));
    link('Download as zip', files.zipUrl(entry.path));
    if (canWrite) item('Rename', () => rename(entry));
    if (canWrite) item('Move', () => move(entry));
    // A folder inside a shared folder is shared with it, not on its own.
    if (entry.shared || !mountOf(entry.path)) item(member ? 'Who has access…' : 'Share folder…', () => openShare(entry));
    item('Share link…', () => showLinks(entry.path, null, true));
    if (member) item('Leave', () => leaveShare(entry), 'danger');
    else if (canWrite) item('Delete', () => remove(entry), 'danger');
  } else {
    const canWrite = writable(entry.path);
    item('Preview', () => preview(entry));
    link('Download', files.downloadUrl(entry.path));
    if (canWrite) item('Rename', () => rename(entry));
    if (canWrite) item('Move', () => move(entry));
    item('Share link…', () => showLinks(entry.path, null, false));
    item('Revisions', () => showRevisions(entry.path));
    if (canWrite) item('Delete', () => remove(entry), 'danger');
  }
  showMenu(anchor, items, x, y);
}

/// Shows the menu's items next to the button that opened it (or where the
/// pointer is), on the screen, with the first item focused.
function showMenu(anchor, items, x, y) {
  const menu = $('menu');
  menu.replaceChildren(...items);
  menu.hidden = false;
  // Back to the focusable row after, or to the button itself.
  menuReturn = anchor.closest('tr[tabindex]') || anchor;
  const r = anchor.getBoundingClientRect();
  const mw = menu.offsetWidth;
  const mh = menu.offsetHeight;
  const left = Math.max(4, Math.min((x ?? r.right - mw), innerWidth - mw - 4));
  const top = (y ?? r.bottom) + mh > innerHeight - 4 ? Math.max(4, (y ?? r.top) - mh) : (y ?? r.bottom);
  menu.style.left = `${left}px`;
  menu.style.top = `${top}px`;
  items[0].focus();
}

function closeMenu(restoreFocus = true) {
  const menu = $('menu');
  if (menu.hidden) return;
  menu.hidden = true;
  if (restoreFocus && menuReturn && document.contains(menuReturn)) menuReturn.focus();
}

$('menu').addEventListener('keydown', (ev) => {
  const items = [...$('menu').children];
  const i = items.indexOf(document.activeElement);
  if (ev.key === 'ArrowDown') { ev.preventDefault(); items[(i + 1) % items.length].focus(); }
  if (ev.key === 'ArrowUp') { ev.preventDefault(); items[(i - 1 + items.length) % items.length].focus(); }
  if (ev.key === 'Escape' || ev.key === 'Tab') { ev.preventDefault(); closeMenu(); }
});
document.addEventListener('click', (ev) => { if (!$('menu').contains(ev.target)) closeMenu(false); });
window.addEventListener('resize', () => closeMenu(false));

// ---------- search ----------

/// One request once typing pauses, not one a keystroke.
const SEARCH_DELAY_MS = 150;
const SEARCH_LIMIT = 50;
const SEARCH_PANEL_PX = 480;

const search = {
  /// The text the results listed are for ('' while none are).
  shown: '',
  results: [],
  /// The result the arrows are on, -1 for none.
  active: -1,
  timer: null,
  /// Raised by each request and by clearing, so an answer to an older one
  /// that comes late is dropped.
  seq: 0,
  /// A request is under way, for `asking`; `again`: for other text since.
  busy: false,
  asking: '',
  again: false,
  /// Enter came before the results for what is typed: the first is opened
  /// when they do.
  openFirst: false,
};

/// A file picked in the results, opened once its folder is listed.
let reveal = null;

const searchText = () => $('search-input').value.trim();

function showSearchPanel(open) {
  const panel = $('search-panel');
  panel.hidden = !open;
  $('search-input').setAttribute('aria-expanded', String(open));
  if (!open) { setActive(-1); return; }
  // Where the box is depends on the width of the bar: the list is kept
  // on the screen, under the box as far as it can be.
  const box = $('search').getBoundingClientRect();
  const width = Math.max(box.width, Math.min(SEARCH_PANEL_PX, innerWidth - 16));
  const left = Math.max(8, Math.min(box.left, innerWidth - width - 8));
  panel.style.width = `${width}px`;
  panel.style.left = `${left - box.left}px`;
}
window.addEventListener('resize', () => { if (!$('search-panel').hidden) showSearchPanel(true); });

function cancelSearch() {
  clearTimeout(search.timer);
  search.timer = null;
  search.seq += 1;
  // The answer under way is for nothing shown now, whatever its text.
  search.asking = '';
  search.openFirst = false;
}

function resetSearch() {
  cancelSearch();
  search.shown = '';
  search.results = [];
  $('search-results').replaceChildren();
  $('search-status').textContent = '';
  showSearchPanel(false);
}

/// Escape, and signing out: the next one to sign in sees nothing of it.
function clearSearch() {
  $('search-input').value = '';
  resetSearch();
}

function searchSoon() {
  clearTimeout(search.timer);
  search.openFirst = false;
  if (!searchText()) { resetSearch(); return; }
  search.timer = setTimeout(runSearch, SEARCH_DELAY_MS);
}

async function runSearch() {
  clearTimeout(search.timer);
  search.timer = null;
  const text = searchText();
  if (!text) return;
  // One request at a time: the server takes a user's searches one after
  // the other (and refuses one kept waiting), so the latest text is asked
  // for once the answer under way has come.
  if (search.busy) { if (text !== search.asking) search.again = true; return; }
  const seq = ++search.seq;
  if (new TextEncoder().encode(text).length > 255) {
    renderSearch(text, null, 'No name is that long: names are at most 255 bytes.');
    return;
  }
  search.busy = true;
  search.asking = text;
  let res = null;
  let failed = null;
  try {
    res = await files.search(text, SEARCH_LIMIT);
  } catch (e) {
    failed = e;
  } finally {
    search.busy = false;
  }
  if (search.again) {
    search.again = false;
    runSearch();
    return;
  }
  if (seq !== search.seq || text !== searchText()) return;
  if (failed) {
    if (!(failed instanceof ApiError && failed.status === 401)) renderSearch(text, null, serverSaid(failed));
    return;
  }
  renderSearch(text, res);
  if (search.openFirst) {
    search.openFirst = false;
    if (search.results.length) openResult(search.results[0]);
  }
}

/// Where `text` is in `name`, in any case, as [start, end) in the name's
/// own characters: lowercasing can change a string's length, so the
/// lowercased name's indexes are not the name's.
function matchIn(name, text) {
  const needle = text.toLowerCase();
  for (let i = 0; i < name.length; i++) {
    for (let j = i + 1; j <= name.length; j++) {
      const part = name.slice(i, j).toLowerCase();
      if (part === needle) return [i, j];
      if (!needle.startsWith(part)) break;
    }
  }
  return null;
}

function highlighted(name, text) {
  const at = matchIn(name, text);
  if (!at) return [name];
  return [name.slice(0, at[0]), el('mark', { text: name.slice(at[0], at[1]) }), name.slice(at[1])];
}

function searchItem(entry, i, text) {
  const folder = parentOf(entry.path);
  const where = `in ${folder === '/' ? 'My files' : folder}`;
  const facts = entry.kind === 'folder' ? [where] : [where, formatBytes(entry.size), when(entry.modified_ms)];
  return el('li', {
    id: `search-result-${i}`, role: 'option', 'aria-selected': 'false',
    'data-path': entry.path, 'data-kind': entry.kind,
    'aria-label': `${entry.kind === 'folder' ? 'Folder' : 'File'} ${entry.name}, ${facts.join(', ')}`,
    onclick: () => openResult(entry),
  },
  fileIcon(entry),
  el('div', { class: 'search-text' },
    el('span', { class: 'search-name', title: entry.name }, ...highlighted(entry.name, text)),
    el('span', { class: 'search-where', title: entry.path, text: facts.join(' · ') })),
  sharedBadge(entry));
}

function renderSearch(text, res, problem = null) {
  const was = search.results[search.active]?.path;
  search.shown = text;
  search.results = res ? res.entries : [];
  const n = search.results.length;
  $('search-results').replaceChildren(...search.results.map((e, i) => searchItem(e, i, text)));
  const status = $('search-status');
  status.classList.toggle('problem', !!problem);
  status.textContent = problem
    || (n === 0 ? `Nothing's name holds “${text}”`
      : res.more ? 'More match: type more to narrow it down'
        : `${n} ${n === 1 ? 'match' : 'matches'}`);
  // Typed, then gone elsewhere before the answer: it shows on coming back.
  if (document.activeElement !== $('search-input')) return;
  showSearchPanel(true);
  setActive(search.results.findIndex((e) => e.path === was));
}

function setActive(i) {
  const items = [...$('search-results').children];
  search.active = i >= 0 && i < items.length ? i : -1;
  items.forEach((li, k) => li.setAttribute('aria-selected', String(k === search.active)));
  const input = $('search-input');
  if (search.active < 0) { input.removeAttribute('aria-activedescendant'); return; }
  input.setAttribute('aria-activedescendant', items[search.active].id);
  items[search.active].scrollIntoView({ block: 'nearest' });
}

/// Back in the box: what was found shows at once, and is asked again, as
/// the files may have changed meanwhile.
function reopenSearch() {
  if (!searchText()) return;
  if (search.shown) showSearchPanel(true);
  runSearch();
}

/// A folder opens in the list; a file opens in its folder, its row
/// focused, as a click on its name there does (the preview).
function openResult(entry) {
  const folder = entry.kind === 'folder' ? entry.path : parentOf(entry.path);
  showSearchPanel(false);
  reveal = entry.kind === 'folder' ? null : { path: entry.path, folder };
  if (reveal) state.flash.add(entry.path);
  if (state.view === 'files' && state.folder === folder) {
    state.selected.clear();
    refresh(true);
  } else {
    go(folder);
  }
}

function revealFile() {
  const { path } = reveal;
  reveal = null;
  const entry = state.entries.find((e) => e.path === path);
  const tr = [...$('rows').children].find((r) => r.dataset.path === path);
  if (!entry || !tr) { toast(`“${nameOf(path)}” is no longer there.`, true); return; }
  for (const r of $('rows').children) r.tabIndex = -1;
  tr.tabIndex = 0;
  // Focused first, so closing the preview comes back to the file's row.
  tr.focus();
  preview(entry);
}

$('search-input').addEventListener('input', searchSoon);
$('search-input').addEventListener('focus', reopenSearch);
$('search-input').addEventListener('keydown', (ev) => {
  if (ev.isComposing) return;
  const n = search.results.length;
  const open = !$('search-panel').hidden;
  switch (ev.key) {
    case 'ArrowDown':
      ev.preventDefault();
      if (!open) reopenSearch();
      else if (n) setActive((search.active + 1) % n);
      break;
    case 'ArrowUp':
      ev.preventDefault();
      if (!open) reopenSearch();
      else if (n) setActive(search.active <= 0 ? n - 1 : search.active - 1);
      break;
    case 'Enter': {
      ev.preventDefault();
      const settled = !search.timer && !search.busy && search.shown === searchText();
      if (open && search.active >= 0) openResult(search.results[search.active]);
      else if (settled) { if (n) openResult(search.results[0]); }
      else if (searchText()) {
        search.openFirst = true;
        runSearch();
      }
      break;
    }
    case 'Escape':
      // Only when there is something to clear: otherwise Escape is the
      // page's (it closes the side panel).
      if (ev.currentTarget.value || open) {
        ev.preventDefault();
        ev.stopPropagation();
        clearSearch();
      }
      break;
    default:
  }
});
// The list closes when the focus leaves the box; a press on a result
// must not take the focus from it first.
$('search').addEventListener('focusout', (ev) => { if (!$('search').contains(ev.relatedTarget)) showSearchPanel(false); });
$('search-panel').addEventListener('mousedown', (ev) => ev.preventDefault());

/// "/" goes to the search box from anywhere but a field being typed in.
document.addEventListener('keydown', (ev) => {
  if (ev.key !== '/' || ev.ctrlKey || ev.metaKey || ev.altKey || ev.defaultPrevented) return;
  if ($('app').hidden || document.querySelector('dialog[open]') || !$('menu').hidden) return;
  const t = ev.target;
  const typing = t instanceof HTMLElement && (t.isContentEditable || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT'
    || (t.tagName === 'INPUT' && !['checkbox', 'radio', 'button', 'submit', 'reset'].includes(t.type)));
  if (typing) return;
  ev.preventDefault();
  $('search-input').focus();
  $('search-input').select();
});

// ---------- dialogs ----------

/// Shows the dialog; resolves with the input's value (or true), or null.
function dialog({ title, text = '', value = null, ok = 'OK', danger = false, extra = null, check = null, type = 'text', label = null }) {
  const d = $('dialog');
  $('dialog-title').textContent = title;
  $('dialog-text').textContent = text;
  $('dialog-text').hidden = !text;
  $('dialog-error').textContent = '';
  const input = $('dialog-input');
  input.hidden = value === null;
  input.value = value ?? '';
  input.type = type;
  input.autocomplete = type === 'password' ? 'new-password' : 'off';
  if (label) input.setAttribute('aria-label', label); else input.removeAttribute('aria-label');
  $('dialog-extra').replaceChildren(...(extra ? [extra] : []));
  $('dialog-ok').textContent = ok;
  $('dialog-ok').className = danger ? 'primary danger' : 'primary';
  return new Promise((resolve) => {
    const form = $('dialog-form');
    const done = (v) => { form.onsubmit = null; $('dialog-cancel').onclick = null; d.onclose = null; if (d.open) d.close(); resolve(v); };
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      // A password is taken as typed, spaces and all.
      const v = value === null ? true : type === 'password' ? input.value : input.value.trim();
      if (check) {
        const problem = await check(v);
        if (problem) { $('dialog-error').textContent = problem; return; }
      }
      done(v);
    };
    $('dialog-cancel').onclick = () => done(null);
    d.onclose = () => done(null);
    d.showModal();
    if (value !== null) {
      input.focus();
      const dot = input.value.lastIndexOf('.');
      input.setSelectionRange(0, dot > 0 ? dot : input.value.length);
    } else {
      $('dialog-ok').focus();
    }
  });
}

function nameProblem(name) {
  if (!name) return 'Enter a name.';
  if (name.includes('/')) return 'A name cannot contain “/”.';
  if (name === '.' || name === '..') return 'That name is reserved.';
  if (new TextEncoder().encode(name).length > 255) return 'That name is too long.';
  return null;
}

async function errorText(fn) {
  try { await fn(); return null; } catch (e) { return e.message || String(e); }
}

$('btn-mkdir').addEventListener('click', async () => {
  const name = await dialog({
    title: 'New folder', value: 'New folder', ok: 'Create',
    check: (n) => nameProblem(n) || errorText(() => files.mkdir(join(state.folder, n))),
  });
  if (name) { state.flash.add(join(state.folder, name)); refresh(); }
});

async function rename(entry) {
  const name = await dialog({
    title: `Rename “${entry.name}”`, value: entry.name, ok: 'Rename',
    check: (n) => nameProblem(n) || (n === entry.name ? null : errorText(() => files.move(entry.path, join(parentOf(entry.path), n)))),
  });
  if (name && name !== entry.name) {
    state.flash.add(join(parentOf(entry.path), name));
    toast(`Renamed to “${name}”`);
    refresh();
  }
}

// ---------- selection ----------

function toggleSelected(path, on) {
  if (on) state.selected.add(path); else state.selected.delete(path);
  renderFiles();
}

function setSelection(paths) {
  state.selected = new Set(paths);
  renderFiles();
}

function selectedEntries() {
  return state.entries.filter((e) => state.selected.has(e.path));
}

function renderSelection() {
  const n = state.view === 'files' ? state.selected.size : 0;
  $('selection').hidden = n === 0;
  $('sel-count').textContent = `${n} selected`;
  const readOnly = state.view === 'files' && !writableHere();
  $('sel-move').hidden = readOnly;
  $('sel-delete').hidden = readOnly;
}

$('sel-clear').addEventListener('click', () => setSelection([]));
$('sel-move').addEventListener('click', () => move(selectedEntries()));
$('sel-delete').addEventListener('click', async () => {
  const picked = selectedEntries();
  let done = 0;
  for (const e of picked) {
    try {
      await files.remove(e.path);
      done += 1;
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) toast(`${e.name}: ${err.message}`, true);
      break;
    }
  }
  if (done) toast(`${done} item${done === 1 ? '' : 's'} moved to the trash`);
  state.selected.clear();
  refresh();
  usageSoon();
});

/// A small folder chooser (the subfolders of where it stands) for one
/// item or several.
async function move(entries) {
  const list = Array.isArray(entries) ? entries : [entries];
  if (!list.length) return;
  const moving = new Set(list.map((e) => e.path));
  const from = parentOf(list[0].path);
  let here = from;
  const box = el('div');
  const render = async () => {
    let folders = [];
    try { folders = (await files.list(here)).entries.filter((e) => e.kind === 'folder' && !moving.has(e.path)); } catch (e) { $('dialog-error').textContent = e.message; }
    const rows = [];
    rows.push(el('p', { class: 'muted', text: `Move to: ${here === '/' ? 'My files' : here}` }));
    const buttons = el('div', { class: 'folders' });
    if (here !== '/') buttons.append(el('button', { type: 'button', text: '↑ Up one level', onclick: () => { here = parentOf(here); render(); } }));
    for (const f of folders) buttons.append(el('button', { type: 'button', onclick: () => { here = f.path; render(); } }, fileIcon(f), f.name));
    rows.push(buttons);
    box.replaceChildren(...rows);
  };
  await render();
  const title = list.length === 1 ? `Move “${list[0].name}”` : `Move ${list.length} items`;
  const ok = await dialog({
    title, ok: 'Move here', extra: box,
    check: async () => {
      if (here === from) return 'Already in this folder: choose another.';
      for (const e of list) {
        if (here === e.path || here.startsWith(`${e.path}/`)) return `“${e.name}” cannot go inside itself.`;
        if (parentOf(e.path) === here) continue;
        const problem = await errorText(() => files.move(e.path, join(here, e.name)));
        if (problem) return `${e.name}: ${problem}`;
      }
      return null;
    },
  });
  if (ok) {
    state.selected.clear();
    toast(`Moved to ${here === '/' ? 'My files' : here}`);
    refresh();
  } else {
    refresh();
  }
}

async function remove(entry) {
  if (entry.shared === 'editor' || entry.shared === 'viewer') { leaveShare(entry); return; }
  const info = entry.shared === 'owner' ? state.shares.get(entry.path) : null;
  const others = info ? info.members.filter((m) => m.role !== 'owner').length : 0;
  if (others) {
    const sure = await dialog({
      title: `Delete “${entry.name}”?`,
      text: `It is shared with ${others === 1 ? 'one other person' : `${others} other people`}: they lose it too. It goes to your trash, whole.`,
      ok: 'Delete', danger: true,
    });
    if (!sure) return;
  }
  const ok = await attempt(() => files.remove(entry.path));
  if (ok !== undefined) {
    toast(`“${entry.name}” moved to the trash`);
    refresh();
    usageSoon();
  }
}

// ---------- trash ----------

function renderTrash() {
  renderCrumbs();
  $('readonly-note').hidden = true;
  $('list-head').replaceChildren(
    el('th', { class: 'c-name', scope: 'col' }, el('button', { type: 'button', text: 'Name', disabled: true })),
    el('th', { class: 'c-where', scope: 'col' }, el('button', { type: 'button', text: 'Was in', disabled: true })),
    el('th', { class: 'c-mod', scope: 'col' }, el('button', { type: 'button', text: 'Deleted', disabled: true })),
    el('th', { class: 'c-more' }, el('span', { class: 'visually-hidden', text: 'Actions' })),
  );
  const items = [...state.trash].sort((a, b) => b.deleted_ms - a.deleted_ms);
  const rows = items.map((t) => {
    const entry = { ...t, name: nameOf(t.path) };
    const tr = el('tr', { tabindex: '-1', 'data-path': t.path, 'data-id': t.id, 'aria-label': `Deleted ${t.kind} ${entry.name}` });
    tr.append(
      el('td', {}, el('div', { class: 'name' },
        fileIcon(entry),
        el('div', {}, el('span', { class: 'label', text: entry.name, title: t.path }),
          el('div', { class: 'sub', text: `${parentOf(t.path) === '/' ? 'My files' : parentOf(t.path)} · ${when(t.deleted_ms)}` })))),
      el('td', { text: parentOf(t.path) === '/' ? 'My files' : parentOf(t.path), title: t.path }),
      el('td', { text: when(t.deleted_ms), title: new Date(t.deleted_ms).toLocaleString() }),
      el('td', {}, el('button', {
        type: 'button', class: 'more', 'aria-haspopup': 'menu', 'aria-label': `Actions for ${entry.name}`, tabindex: '-1', text: '⋯',
        onclick: (ev) => { ev.stopPropagation(); openMenu(ev.currentTarget, entry); },
      })),
    );
    tr.addEventListener('keydown', (ev) => rowKey(ev, entry, tr));
    tr.addEventListener('click', () => tr.focus());
    tr.addEventListener('contextmenu', (ev) => { ev.preventDefault(); openMenu(tr.querySelector('.more'), entry, ev.clientX, ev.clientY); });
    return tr;
  });
  $('rows').replaceChildren(...rows);
  makeRowsTabbable();
  $('empty').hidden = rows.length > 0;
  $('empty').textContent = 'The trash is empty.';
  $('btn-empty-trash').disabled = rows.length === 0;
}

async function restoreTrash(entry) {
  try {
    const restored = await trash.restore(entry.id);
    toast(`Restored to ${restored.path}`);
    refresh();
    usageSoon();
  } catch (e) {
    if (e instanceof ApiError && e.status === 409) {
      const to = await dialog({
        title: `Restore “${entry.name}”`,
        text: `${entry.path} is taken now. Restore it under another path:`,
        value: join(parentOf(entry.path), `${entry.name} (restored)`), ok: 'Restore',
        check: (p) => errorText(() => trash.restore(entry.id, p.startsWith('/') ? p : `/${p}`)),
      });
      if (to) { toast(`Restored to ${to}`); refresh(); usageSoon(); }
    } else if (!(e instanceof ApiError && e.status === 401)) {
      toast(e.message, true);
    }
  }
}

async function purge(entry) {
  const ok = await dialog({ title: 'Delete forever?', text: `“${entry.name}” will be deleted permanently. This cannot be undone.`, ok: 'Delete forever', danger: true });
  if (!ok) return;
  if (await attempt(() => trash.purge(entry.id)) !== undefined) {
    toast(`“${entry.name}” deleted forever`);
    refresh();
    usageSoon();
  }
}

$('btn-empty-trash').addEventListener('click', async () => {
  const ok = await dialog({ title: 'Empty the trash?', text: 'Everything in the trash will be deleted permanently. This cannot be undone.', ok: 'Empty trash', danger: true });
  if (!ok) return;
  const upto = state.trash.reduce((m, t) => Math.max(m, t.deleted_ms), 0);
  if (await attempt(() => trash.empty(upto)) !== undefined) { toast('The trash is empty'); refresh(); usageSoon(); }
});

// ---------- revisions panel ----------

const PIN_KEEPS = 'Pinned revisions are kept whatever the retention schedule says, and are never removed to make room under a quota.';

function pinIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '14');
  svg.setAttribute('height', '14');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('fill', 'currentColor');
  path.setAttribute('d', 'M10 1l5 5-1.2 1.2-1.1-.4-2.4 2.4.4 3.2-1.2 1.2-2.8-2.8L3 15H1v-2l3.6-3.7-2.8-2.8L3 5.3l3.2.4 2.4-2.4-.4-1.1z');
  svg.append(path);
  return svg;
}

function revisionItem(path, r, current) {
  const canWrite = writable(path);
  const li = el('li', { 'data-rev': String(r.rev), class: r.pinned ? 'pinned' : '' },
    el('div', { class: 'row' },
      el('strong', { text: `Revision ${r.rev}` }),
      r.rev === current ? el('span', { class: 'current', text: 'current' }) : null,
      r.pinned ? el('span', { class: 'pin-mark', title: PIN_KEEPS }, pinIcon(), 'Pinned') : null),
    el('div', { class: 'muted', text: `${new Date(r.created_ms).toLocaleString()} · ${formatBytes(r.size)} · ${r.device}` }),
    el('div', { class: 'row' },
      el('a', { class: 'button', href: files.downloadUrl(path, r.rev), download: '', text: 'Download' }),
      r.rev === current || !canWrite ? null : el('button', {
        type: 'button', text: 'Restore',
        onclick: async () => {
          if (await attempt(() => files.restore(path, r.rev)) !== undefined) {
            toast(`Revision ${r.rev} restored as the current version`);
            state.flash.add(path);
            refresh();
            usageSoon();
            showRevisions(path);
          }
        },
      }),
      !canWrite ? null : el('button', {
        type: 'button', class: 'pin',
        text: r.pinned ? 'Unpin' : 'Pin',
        'aria-label': `${r.pinned ? 'Unpin' : 'Pin'} revision ${r.rev}`,
        title: r.pinned ? 'Unpin: the retention schedule may remove this revision again' : `Pin: keep this revision. ${PIN_KEEPS}`,
        onclick: async (ev) => {
          const button = ev.currentTarget;
          button.disabled = true;
          let updated;
          try {
            updated = await files.pin(path, r.rev, !r.pinned);
          } catch (e) {
            if (!(e instanceof ApiError && e.status === 401)) toast(e.message, true);
            // Gone meanwhile (retention, or the file was deleted): show what is left.
            if (e instanceof ApiError && e.status === 404 && panelPath === path) showRevisions(path);
            else button.disabled = false;
            return;
          }
          toast(updated.pinned ? `Revision ${r.rev} pinned: it will be kept` : `Revision ${r.rev} unpinned`);
          if (panelPath !== path || !li.isConnected) return;
          const again = revisionItem(path, updated, current);
          li.replaceWith(again);
          again.querySelector('button.pin').focus();
        },
      })));
  return li;
}

let panelPath = null;
async function showRevisions(path) {
  panelPath = path;
  const panel = $('panel');
  $('panel-title').textContent = `Revisions of ${nameOf(path)}`;
  panel.hidden = false;
  document.body.classList.add('panel-open');
  // Another file's list must not stand in for this one's while it loads.
  if ($('panel-body').dataset.path !== path) {
    $('panel-body').dataset.path = path;
    $('panel-body').replaceChildren(el('p', { class: 'muted', text: 'Loading…' }));
  }
  let res;
  try {
    res = await files.revisions(path);
  } catch (e) {
    $('panel-body').replaceChildren(el('p', { class: 'error', text: e.message }));
    return;
  }
  if (panelPath !== path) return;
  const revs = [...res.revisions].sort((a, b) => b.rev - a.rev);
  const current = revs[0]?.rev;
  const list = el('ul', { class: 'revs' });
  for (const r of revs) list.append(revisionItem(path, r, current));
  const note = el('p', { class: 'muted hint', text: `Older revisions are removed over time. ${PIN_KEEPS}` });
  $('panel-body').replaceChildren(note, list);
  $('panel-close').focus();
}

// ---------- links ----------

const EXPIRIES = [['Never expires', 0], ['Expires in 1 day', 86400], ['Expires in 7 days', 7 * 86400], ['Expires in 30 days', 30 * 86400]];

const fullTime = (ms) => new Date(ms).toLocaleString();

/// The side panel for a file's or folder's links: make one (expiry,
/// password), see its address once to copy it, list and revoke the rest.
async function showLinks(path, made = null, folder = false) {
  panelPath = path;
  const panel = $('panel');
  $('panel-title').textContent = `Links to ${nameOf(path)}`;
  panel.hidden = false;
  document.body.classList.add('panel-open');
  $('panel-body').dataset.path = path;
  let all;
  try {
    all = (await links.list()).links;
  } catch (e) {
    $('panel-body').replaceChildren(el('p', { class: 'error', text: e.message }));
    return;
  }
  if (panelPath !== path) return;
  const expiry = el('select', { id: 'link-expiry', 'aria-label': 'Expiry' },
    ...EXPIRIES.map(([label, secs]) => el('option', { value: String(secs), text: label })));
  const password = el('input', { id: 'link-password', type: 'password', autocomplete: 'new-password', placeholder: 'Password (optional)', 'aria-label': 'Password (optional)' });
  const uploadOnly = el('input', { id: 'link-upload-only', type: 'checkbox' });
  const error = el('p', { class: 'error', role: 'alert' });
  const form = el('form', { class: 'link-form', onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    try {
      const link = await links.create(path, Number(expiry.value), password.value, uploadOnly.checked);
      showLinks(path, link, folder);
    } catch (e) {
      error.textContent = e.message;
    }
  } }, expiry, password,
  folder && writable(path) ? el('label', { class: 'check' }, uploadOnly, ' Upload only: visitors send files here and see nothing') : null,
  el('button', { type: 'submit', class: 'primary', text: 'Create link' }), error);
  const parts = [form];
  if (made) {
    const address = `${location.origin}${made.url_path}`;
    const box = el('input', { id: 'link-url', readonly: true, value: address, 'aria-label': 'Link address', onfocus: (ev) => ev.target.select() });
    parts.push(el('div', { class: 'link-made' },
      el('p', { text: 'Copy the link now: it is shown only this once.' }),
      box,
      el('button', { type: 'button', text: 'Copy', onclick: async () => {
        try { await navigator.clipboard.writeText(address); toast('Link copied'); } catch { box.select(); toast('Press Ctrl+C to copy'); }
      } })));
  }
  const mine = all.filter((l) => l.path === path);
  const list = el('ul', { class: 'links' });
  for (const l of mine) {
    const notes = [`made ${fullTime(l.created_ms)}`];
    if (l.expires_ms) notes.push(l.expires_ms <= Date.now() ? 'expired' : `expires ${fullTime(l.expires_ms)}`);
    if (l.has_password) notes.push('password');
    if (l.upload_only) notes.push('upload only');
    list.append(el('li', {},
      el('span', { text: notes.join(' · ') }),
      el('button', { type: 'button', class: 'danger', text: 'Revoke', onclick: async () => {
        if (await attempt(() => links.revoke(l.id), 'Link revoked') !== undefined) showLinks(path, null, folder);
      } })));
  }
  parts.push(mine.length ? list : el('p', { class: 'muted', text: 'No links yet. Anyone who has a link can see this without signing in.' }));
  $('panel-body').replaceChildren(...parts);
  if (made) $('link-url').focus(); else $('panel-close').focus();
}

function closePanel() {
  panelPath = null;
  delete $('panel-body').dataset.path;
  $('panel-body').replaceChildren();
  $('panel').hidden = true;
  document.body.classList.remove('panel-open');
}
$('panel-close').addEventListener('click', closePanel);

document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && !$('panel').hidden && !$('dialog').open && !$('share').open && !$('preview').open && $('menu').hidden) closePanel();
});

// ---------- shared folders ----------

const ROLE_TITLES = {
  owner: 'You share this folder with others',
  editor: 'Shared with you: you can add, change and delete its files',
  viewer: 'Shared with you as a viewer: read-only',
};
const ROLES_EXPLAINED = 'Editors can add, change and delete its files; viewers can open and download them.';
const withArticle = (role) => (role === 'editor' ? 'an editor' : `a ${role}`);

/// The mount point of the shared folder `path` is or lies in
/// ('/Work/Team/a' → '/Work/Team'); null outside every shared folder.
function mountOf(path) {
  const holds = (p) => path === p || path.startsWith(`${p}/`);
  for (const p of state.shares.keys()) if (holds(p)) return p;
  // The listing marks shared folders, should the list not have come.
  return state.entries.find((e) => e.shared && holds(e.path))?.path ?? null;
}

/// The user's role in the shared folder `path` lies in; null outside one.
function roleAt(path) {
  const mount = mountOf(path);
  if (!mount) return null;
  return state.shares.get(mount)?.role ?? state.entries.find((e) => e.path === mount)?.shared ?? null;
}

/// False inside a folder shared with the user as a viewer (its mount point
/// itself is theirs to rename or leave).
function writable(path) {
  return roleAt(path) !== 'viewer' || mountOf(path) === path;
}

/// Whether the folder shown takes new files and folders.
function writableHere() {
  return state.view !== 'files' || state.folder === '/' || roleAt(state.folder) !== 'viewer';
}

function readOnlyText(path) {
  const top = mountOf(path) ?? path;
  const owner = state.shares.get(top)?.owner;
  return `“${nameOf(top)}” is shared with you${owner ? ` by ${owner}` : ''} as a viewer, so it is read-only: you can open and download its files, not add, change or delete them.`;
}

async function loadShares() {
  try {
    const res = await shares.list();
    state.shares = new Map(res.shares.map((s) => [s.path, s]));
  } catch {
    // The listing still marks shared folders, and the server refuses what
    // a viewer may not do.
  }
}

/// "Shared · viewer" on a shared folder: the user's role in it. A folder
/// its owner shares with no one any more is theirs alone again.
function sharedBadge(entry) {
  if (!entry.shared) return null;
  const info = state.shares.get(entry.path);
  if (entry.shared === 'owner' && info && info.members.length <= 1) return null;
  return el('span', { class: `badge shared ${entry.shared}`, title: ROLE_TITLES[entry.shared] || '', text: `Shared · ${entry.shared}` });
}

/// The folder the share dialog is about: `{path, name, info}`, `info`
/// being its ShareInfo (null while it is not shared).
let sharing = null;

function shareStatus(text) {
  $('share-status').textContent = text;
}

function shareError(e) {
  if (e instanceof ApiError && e.status === 401) return;
  $('share-error').textContent = e.message || String(e);
}

/// Where the folder is now: a ShareInfo, or null when it is not shared.
async function fetchShare(path) {
  const res = await shares.list();
  state.shares = new Map(res.shares.map((s) => [s.path, s]));
  return state.shares.get(path) ?? null;
}

/// Opens the share dialog for a folder at the top of one's files: its
/// owner shares it, changes roles, removes members or unshares it; a
/// member sees who has it and can leave.
async function openShare(entry) {
  const d = $('share');
  const path = entry.path;
  const known = state.shares.get(path) ?? null;
  sharing = { path, name: entry.name, info: known, role: entry.shared || 'owner', loading: !known && !!entry.shared };
  $('share-error').textContent = '';
  shareStatus('');
  $('share-user').value = '';
  $('share-role').value = 'editor';
  renderShare();
  d.showModal();
  focusShare();
  try {
    const info = await fetchShare(path);
    if (sharing?.path !== path) return;
    sharing.info = info;
    sharing.loading = false;
    if (info) sharing.role = info.role;
    renderShare();
  } catch (e) {
    if (sharing?.path === path) shareError(e);
  }
}

function focusShare() {
  if (!$('share-form').hidden) $('share-user').focus();
  else if (!$('share-leave').hidden) $('share-leave').focus();
  else $('share-done').focus();
}

function renderShare() {
  if (!sharing) return;
  const { name, info } = sharing;
  const role = info ? info.role : sharing.role;
  const owner = role === 'owner';
  const others = info ? info.members.filter((m) => m.role !== 'owner') : [];
  $('share-title').textContent = owner ? `Share “${name}”` : `“${name}” is shared with you`;
  $('share-about').textContent = owner
    ? `${others.length ? `Shared with ${others.length === 1 ? 'one person' : `${others.length} people`}.` : 'Share this folder with other people on this server.'} ${ROLES_EXPLAINED}`
    : `${info?.owner || 'Its owner'} shares it with you as ${withArticle(role)}: ${role === 'viewer' ? 'you can open and download its files, not change them.' : 'you can add, change and delete its files.'}`;
  $('share-form').hidden = !owner;
  $('share-unshare').hidden = !(owner && others.length);
  $('share-leave').hidden = owner;
  const list = $('share-members');
  if (sharing.loading) {
    list.replaceChildren(el('li', { class: 'muted', text: 'Loading…' }));
    return;
  }
  const people = info ? info.members : [{ username: state.me || 'You', role: 'owner' }];
  list.replaceChildren(...people.map((m) => memberItem(m, owner)));
  if (owner && !others.length) list.append(el('li', { class: 'muted', text: 'No one else has access yet.' }));
}

function memberItem(m, owner) {
  const you = m.username === state.me ? ' (you)' : '';
  const who = el('span', { class: 'member-name', text: `${m.username}${you}` });
  if (m.role === 'owner' || !owner) {
    return el('li', { 'data-user': m.username, 'data-role': m.role }, who,
      el('span', { class: 'member-role', text: m.role === 'owner' ? 'Owner' : m.role === 'editor' ? 'Editor' : 'Viewer' }));
  }
  const select = el('select', {
    class: 'member-select', 'aria-label': `Role for ${m.username}`,
    onchange: () => changeRole(m.username, select),
  },
  el('option', { value: 'editor', text: 'Editor' }),
  el('option', { value: 'viewer', text: 'Viewer' }));
  select.value = m.role;
  return el('li', { 'data-user': m.username, 'data-role': m.role }, who,
    el('span', { class: 'member-actions' }, select,
      el('button', { type: 'button', class: 'danger', text: 'Remove', 'aria-label': `Remove ${m.username}`, onclick: (ev) => removeMember(m.username, ev.currentTarget) })));
}

$('share-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (!sharing) return;
  const { path } = sharing;
  const username = $('share-user').value.trim();
  const role = $('share-role').value;
  $('share-error').textContent = '';
  shareStatus('');
  if (!username) {
    $('share-error').textContent = 'Enter the username of the person to share with.';
    $('share-user').focus();
    return;
  }
  const button = $('share-submit');
  button.disabled = true;
  try {
    const info = await shares.share(path, username, role);
    if (sharing?.path !== path) return;
    sharing.info = info;
    state.shares.set(info.path, info);
    $('share-user').value = '';
    renderShare();
    shareStatus(`Shared with ${username} as ${withArticle(role)}.`);
    refresh();
  } catch (e) {
    shareError(e);
  } finally {
    button.disabled = false;
  }
  $('share-user').focus();
});

async function changeRole(username, select) {
  if (!sharing?.info) return;
  const { path, info } = sharing;
  const before = info.members.find((m) => m.username === username)?.role;
  const role = select.value;
  $('share-error').textContent = '';
  shareStatus('');
  select.disabled = true;
  try {
    const updated = await shares.setRole(info.id, username, role);
    if (sharing?.path !== path) return;
    sharing.info = updated;
    state.shares.set(updated.path, updated);
    renderShare();
    shareStatus(`${username} is now ${withArticle(role)}.`);
    $('share-members').querySelector(`li[data-user="${CSS.escape(username)}"] select`)?.focus();
  } catch (e) {
    shareError(e);
    if (before) select.value = before;
    select.disabled = false;
    select.focus();
  }
}

async function removeMember(username, button) {
  if (!sharing?.info) return;
  const { path, info } = sharing;
  $('share-error').textContent = '';
  shareStatus('');
  button.disabled = true;
  try {
    await shares.remove(info.id, username);
    const again = await fetchShare(path);
    if (sharing?.path !== path) return;
    sharing.info = again;
    renderShare();
    shareStatus(`${username} no longer has access.`);
    refresh();
  } catch (e) {
    shareError(e);
    button.disabled = false;
  }
  focusShare();
}

$('share-unshare').addEventListener('click', async () => {
  if (!sharing?.info) return;
  const { path, name, info } = sharing;
  const ok = await dialog({
    title: `Unshare “${name}”?`,
    text: 'Everyone you share it with loses access. It stays in your files as it is.',
    ok: 'Unshare', danger: true,
  });
  if (!ok || sharing?.path !== path) return;
  $('share-error').textContent = '';
  shareStatus('');
  try {
    await shares.unshare(info.id);
    const again = await fetchShare(path);
    if (sharing?.path !== path) return;
    sharing.info = again;
    renderShare();
    shareStatus('Unshared: only you have access now.');
    refresh();
  } catch (e) {
    shareError(e);
  }
  focusShare();
});

/// A member leaves a folder shared with them: from the dialog, or the
/// folder's actions.
async function leaveShare(entry) {
  const ok = await dialog({
    title: `Leave “${entry.name}”?`,
    text: 'It leaves your files; everyone else keeps it. Its owner can share it with you again.',
    ok: 'Leave', danger: true,
  });
  if (!ok) return false;
  let info = state.shares.get(entry.path) ?? null;
  try {
    info ||= await fetchShare(entry.path);
    if (!info) throw new ApiError(404, 'not_found', `“${entry.name}” is not shared with you any more.`);
    if (!state.me) state.me = (await account.usage()).user;
    await shares.remove(info.id, state.me);
  } catch (e) {
    if ($('share').open) shareError(e);
    else if (!(e instanceof ApiError && e.status === 401)) toast(e.message || String(e), true);
    return false;
  }
  state.shares.delete(entry.path);
  if ($('share').open) $('share').close();
  toast(`You left “${entry.name}”`);
  if (mountOf(state.folder) === entry.path) go(parentOf(entry.path));
  else refresh();
  return true;
}

$('share-leave').addEventListener('click', async () => {
  if (!sharing) return;
  const left = await leaveShare({ path: sharing.path, name: sharing.name });
  if (!left && $('share').open) focusShare();
});

$('share-close').addEventListener('click', () => $('share').close());
$('share-done').addEventListener('click', () => $('share').close());
$('share').addEventListener('close', () => {
  const path = sharing?.path;
  sharing = null;
  $('share-members').replaceChildren();
  // Back to the folder's row (the list may have been drawn again meanwhile).
  const back = [...$('rows').children].find((r) => r.dataset.path === path);
  if (back) { for (const r of $('rows').children) r.tabIndex = -1; back.tabIndex = 0; back.focus(); }
});

// ---------- uploads ----------

$('btn-upload').addEventListener('click', () => $('pick-files').click());
$('btn-upload-folder').addEventListener('click', () => $('pick-folder').click());
// Browsers without folder picking (some phones) offer files only.
const folderPicking = 'webkitdirectory' in $('pick-folder');
if (!folderPicking) $('btn-upload-folder').hidden = true;
for (const id of ['pick-files', 'pick-folder']) {
  $(id).addEventListener('change', (ev) => {
    const { entries, emptyDirs } = fromInput(ev.target.files);
    if (entries.length) uploads.add(state.folder, entries, emptyDirs);
    ev.target.value = '';
  });
}

const drop = document.body;
let dragDepth = 0;
const carriesFiles = (ev) => [...(ev.dataTransfer?.types || [])].includes('Files');
drop.addEventListener('dragenter', (ev) => {
  if (!carriesFiles(ev) || state.view !== 'files' || $('app').hidden || !writableHere()) return;
  ev.preventDefault();
  dragDepth += 1;
  $('drop').classList.add('over');
});
drop.addEventListener('dragover', (ev) => {
  if (!carriesFiles(ev) || state.view !== 'files' || $('app').hidden) return;
  ev.preventDefault();
  ev.dataTransfer.dropEffect = 'copy';
});
drop.addEventListener('dragleave', () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) $('drop').classList.remove('over');
});
drop.addEventListener('drop', async (ev) => {
  if (!carriesFiles(ev) || state.view !== 'files' || $('app').hidden) return;
  ev.preventDefault();
  dragDepth = 0;
  $('drop').classList.remove('over');
  const folder = state.folder;
  if (!writable(folder)) { toast(readOnlyText(folder), true); return; }
  const { entries, emptyDirs } = await fromDrop(ev.dataTransfer);
  if (entries.length || emptyDirs.length) uploads.add(folder, entries, emptyDirs);
});

function noteUnfinished() {
  const left = unfinished();
  const note = $('resume-note');
  note.hidden = left.length === 0;
  if (!left.length) { note.replaceChildren(); return; }
  const names = left.map((u) => u.path);
  const text = `${left.length} upload${left.length === 1 ? ' was' : 's were'} interrupted (${names.slice(0, 3).join(', ')}${left.length > 3 ? ', …' : ''}). Choose the same file${left.length === 1 ? '' : 's'} again to continue where ${left.length === 1 ? 'it' : 'they'} stopped. `;
  note.replaceChildren(text, el('button', {
    type: 'button',
    text: 'Forget them',
    onclick: () => { forgetUnfinished(); noteUnfinished(); },
  }));
}

// ---------- account: storage, password, devices ----------

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const isUnauthorized = (e) => e instanceof ApiError && e.status === 401;

/// When a device or an account was last heard from: "5 minutes ago" while
/// recent (the server knows it to a few minutes), then the date.
function ago(ms) {
  const mins = Math.floor((Date.now() - ms) / 60000);
  if (mins < 1) return 'just now';
  if (mins < 60) return `${plural(mins, 'minute')} ago`;
  const hours = Math.floor(mins / 60);
  if (hours < 24) return `${plural(hours, 'hour')} ago`;
  return when(ms);
}

function osName(ua) {
  if (/Android/.test(ua)) return 'Android';
  if (/iPhone|iPad/.test(ua)) return 'iOS';
  if (/Windows/.test(ua)) return 'Windows';
  if (/Mac OS X/.test(ua)) return 'macOS';
  if (/Linux|X11/.test(ua)) return 'Linux';
  return null;
}

/// The program a device signed in with, short: its User-Agent is in the
/// cell's title for whoever wants all of it.
function clientLabel(ua) {
  if (!ua) return 'Unknown';
  const ours = /^tessera\/(\S+)/i.exec(ua);
  if (ours) return `Tessera ${ours[1]}`;
  const browser = browserName(ua);
  const os = osName(ua);
  if (browser) return os ? `${browser} on ${os}` : browser;
  return ua.length > 40 ? `${ua.slice(0, 40)}…` : ua;
}

function signedOutText(n) {
  if (n === 0) return 'no device was signed in';
  return `${plural(n, 'device')} ${n === 1 ? 'was' : 'were'} signed out`;
}

/// One of a page's two lines: what happened, or what went wrong.
function note(statusId, errorId, status, error) {
  $(statusId).textContent = status;
  $(errorId).textContent = error;
}

/// Whose account the page is (known for sure once the usage has come).
function renderWho() {
  $('account-who').textContent = state.me ? `Signed in as ${state.me}.` : '';
  // For password managers: which account the new password is for.
  $('password-user').value = state.me;
}

async function showAccount(focus) {
  renderWho();
  if (focus) $('account-title').focus();
  refreshUsage();
  await loadDevices();
}

let devicesSeq = 0;
async function loadDevices() {
  const seq = ++devicesSeq;
  let res;
  try {
    res = await account.devices();
  } catch (e) {
    if (seq === devicesSeq && !isUnauthorized(e)) $('devices-error').textContent = serverSaid(e);
    return;
  }
  if (seq !== devicesSeq) return;
  // This browser first, then the most recently heard from.
  const seen = (d) => d.last_seen_ms ?? d.signed_in_ms;
  const list = [...res.devices].sort((a, b) => Number(b.current) - Number(a.current) || seen(b) - seen(a));
  $('device-rows').replaceChildren(...list.map(deviceRow));
}

function lastSeenCell(ms, { current = false, cls = null } = {}) {
  if (current) return el('td', { class: cls, text: 'Now' });
  if (!ms) return el('td', { class: cls, text: '—', title: 'Not seen yet' });
  return el('td', { class: cls, text: ago(ms), title: fullTime(ms) });
}

function deviceRow(d) {
  const syncing = d.polls > 0;
  return el('tr', { 'data-device': d.id, class: d.current ? 'current' : null },
    el('td', {}, el('div', { class: 'name' },
      el('span', { class: 'label', text: d.name, title: d.name }),
      d.current ? el('span', { class: 'badge here', text: 'this browser' }) : null)),
    el('td', { class: 'c-client', text: clientLabel(d.client), title: d.client || null }),
    el('td', { text: when(d.signed_in_ms), title: fullTime(d.signed_in_ms) }),
    lastSeenCell(d.last_seen_ms, { current: d.current }),
    el('td', { class: 'c-sync', text: syncing ? 'Yes' : 'No', title: syncing ? 'Connected now, waiting for changes' : null }),
    el('td', { class: 'c-act' }, d.current ? null : el('button', {
      type: 'button', class: 'danger', text: 'Sign out', 'aria-label': `Sign out ${d.name}`,
      onclick: () => signOutDevice(d),
    })),
  );
}

async function signOutDevice(d) {
  const ok = await dialog({
    title: `Sign out “${d.name}”?`,
    text: `Signed in ${fullTime(d.signed_in_ms)}${d.client ? ` with ${clientLabel(d.client)}` : ''}. It has to sign in again to reach your files; a sync running there stops.`,
    ok: 'Sign out', danger: true,
  });
  if (!ok) return;
  note('devices-status', 'devices-error', '', '');
  try {
    await account.signOutDevice(d.id);
    note('devices-status', 'devices-error', `“${d.name}” is signed out.`, '');
  } catch (e) {
    if (isUnauthorized(e)) return;
    // Gone already (signed out elsewhere, or its sign-in expired).
    if (e.status === 404) note('devices-status', 'devices-error', `“${d.name}” is no longer signed in.`, '');
    else note('devices-status', 'devices-error', '', serverSaid(e));
  }
  await loadDevices();
  $('devices-title').focus();
}

function passwordProblem(text, field) {
  $('pw-error').textContent = text;
  $(field).focus();
}

$('password-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const current = $('pw-current').value;
  const next = $('pw-new').value;
  const here = $('pw-signout-here').checked;
  note('pw-status', 'pw-error', '', '');
  if (!current) { passwordProblem('Enter your current password.', 'pw-current'); return; }
  if (!next) { passwordProblem('Enter a new password.', 'pw-new'); return; }
  if (next !== $('pw-again').value) { passwordProblem('The new passwords do not match: type the same one twice.', 'pw-again'); return; }
  if (here && uploads && uploads.busy()) {
    const sure = await dialog({ title: 'Sign out this browser?', text: 'Uploads are still under way. Signing out cancels them.', ok: 'Change and sign out', danger: true });
    if (!sure) return;
  }
  const button = $('pw-submit');
  button.disabled = true;
  let res;
  try {
    res = await account.changePassword(current, next, here);
  } catch (e) {
    if (isUnauthorized(e)) return;
    // 403: the current password is wrong; 400: the new one is refused.
    passwordProblem(serverSaid(e), e.status === 403 ? 'pw-current' : 'pw-new');
    return;
  } finally {
    button.disabled = false;
  }
  $('password-form').reset();
  if (here) {
    // The server has cleared this browser's session cookie.
    uploads?.cancelAll();
    showSignin('Your password is changed and this browser is signed out. Sign in with the new password.');
    return;
  }
  const others = res.signed_out;
  $('pw-status').textContent = `Password changed; ${others === 0 ? 'no other device was signed in' : `${plural(others, 'other device')} ${others === 1 ? 'was' : 'were'} signed out`}.`;
  loadDevices();
});

// ---------- users (administrators) ----------

const STATES = { active: 'Active', disabled: 'Disabled', deleted: 'Deleted', purging: 'Being purged' };

/// Whether the signed-in user is an administrator: the server lists the
/// users only for them (403 for everyone else). The Users entry follows.
async function checkAdmin() {
  try {
    state.users = (await admin.users()).users;
    state.admin = true;
  } catch {
    state.admin = false;
  }
  $('nav-users').hidden = !state.admin;
}

async function showUsers(focus) {
  note('users-status', 'users-error', '', '');
  $('user-form-error').textContent = '';
  if (focus) $('users-title').focus();
  await loadUsers();
}

let usersSeq = 0;
async function loadUsers() {
  const seq = ++usersSeq;
  let res;
  try {
    res = await admin.users();
  } catch (e) {
    if (seq !== usersSeq || isUnauthorized(e)) return;
    const refused = e.status === 403;
    if (refused) { state.admin = false; $('nav-users').hidden = true; }
    $('add-user').hidden = refused;
    $('users-error').textContent = serverSaid(e, state.me);
    $('user-rows').replaceChildren();
    return;
  }
  if (seq !== usersSeq) return;
  state.admin = true;
  $('nav-users').hidden = false;
  $('add-user').hidden = false;
  state.users = res.users;
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
  const list = [...state.users].sort((a, b) => collator.compare(a.name, b.name));
  $('user-rows').replaceChildren(...list.map(userRow));
}

function storageText(u) {
  return u.quota_bytes ? `${formatBytes(u.used_bytes)} of ${formatBytes(u.quota_bytes)}` : formatBytes(u.used_bytes);
}

function stateCell(u) {
  const badge = el('span', { class: `badge state ${u.state}`, text: STATES[u.state] || u.state });
  if (u.state !== 'deleted') return el('td', {}, badge);
  const until = u.purge_after_ms
    ? el('span', { class: 'muted small', text: `restorable until ${when(u.purge_after_ms)}`, title: `Its files are purged after ${fullTime(u.purge_after_ms)}` })
    : el('span', { class: 'muted small', text: 'restorable' });
  return el('td', {}, el('div', { class: 'state-cell' }, badge, until));
}

function userRow(u) {
  const you = u.name === state.me;
  return el('tr', { 'data-user': u.name, 'data-state': u.state },
    el('td', {}, el('div', { class: 'name' },
      el('span', { class: 'label', text: u.name, title: u.name }),
      you ? el('span', { class: 'muted', text: '(you)' }) : null,
      u.admin ? el('span', { class: 'badge here', text: 'admin', title: 'Administrator: manages users and quotas' }) : null)),
    stateCell(u),
    el('td', { class: 'c-created', text: when(u.created_ms), title: fullTime(u.created_ms) }),
    el('td', { class: 'num', text: storageText(u) }),
    el('td', { class: 'num c-devices', text: String(u.devices) }),
    lastSeenCell(u.last_seen_ms, { cls: 'c-seen' }),
    el('td', { class: 'c-act' }, u.state === 'purging' ? null : el('button', {
      type: 'button', class: 'more', 'aria-haspopup': 'menu', 'aria-label': `Actions for ${u.name}`, text: '⋯',
      onclick: (ev) => { ev.stopPropagation(); openUserMenu(ev.currentTarget, u); },
    })),
  );
}

function openUserMenu(anchor, u) {
  const items = [];
  const item = (label, fn, cls) => items.push(menuButton(label, fn, cls));
  if (u.state === 'deleted') {
    item('Restore', () => restoreUser(u));
  } else {
    if (u.state === 'disabled') item('Enable', () => enableUser(u));
    item('Reset password…', () => resetPassword(u));
    item('Set quota…', () => setQuota(u));
    if (u.state !== 'disabled') item('Disable', () => disableUser(u), 'danger');
    item('Delete', () => deleteUser(u), 'danger');
  }
  showMenu(anchor, items);
}

/// Back to the account's actions after the list is drawn again (the
/// heading when it is gone).
function focusUser(name) {
  const button = $('user-rows').querySelector(`tr[data-user="${CSS.escape(name)}"] .more`);
  (button || $('users-title')).focus();
}

/// Runs an action on an account, then shows the list as it is now, with
/// what happened or the server's refusal in its words (acting on oneself,
/// the last administrator).
async function onUser(u, call, done) {
  note('users-status', 'users-error', '', '');
  let result;
  try {
    result = await call();
  } catch (e) {
    if (isUnauthorized(e)) return;
    $('users-error').textContent = serverSaid(e, u.name, state.me);
    await loadUsers();
    focusUser(u.name);
    return;
  }
  $('users-status').textContent = done(result);
  await loadUsers();
  focusUser(u.name);
}

async function disableUser(u) {
  const ok = await dialog({
    title: `Disable ${u.name}?`,
    text: `${u.name} is signed out on every device and cannot sign in until the account is enabled again. Their files stay as they are.`,
    ok: 'Disable', danger: true,
  });
  if (!ok) return;
  await onUser(u, () => admin.disable(u.name), (r) => `${u.name} is disabled; ${signedOutText(r.signed_out)}.`);
}

async function enableUser(u) {
  await onUser(u, () => admin.enable(u.name), () => `${u.name} is enabled and can sign in again.`);
}

async function deleteUser(u) {
  const ok = await dialog({
    title: `Delete ${u.name}?`,
    text: `${u.name} can no longer sign in and is signed out everywhere. Their files are kept until the purge date (the end of the server's trash period), and the account can be restored until then, files and all. After that date they are deleted for good.`,
    ok: 'Delete user', danger: true,
  });
  if (!ok) return;
  await onUser(u, () => admin.remove(u.name), (r) => (r && r.purge_after_ms
    ? `${u.name} is deleted. Their files are kept until ${fullTime(r.purge_after_ms)}: restore the account before then to bring it back.`
    : `${u.name} is deleted. Their files are kept until they are purged: restore the account to bring it back.`));
}

async function restoreUser(u) {
  await onUser(u, () => admin.restore(u.name), () => `${u.name} is restored, with their files.`);
}

/// Asks in the dialog; `call` runs on OK and its refusal shows there, so
/// the administrator can correct what they typed.
async function askAndRun(u, options, call) {
  let result = null;
  const ok = await dialog({
    ...options,
    check: async (v) => {
      const problem = options.problem ? options.problem(v) : null;
      if (problem) return problem;
      try {
        result = await call(v);
        return null;
      } catch (e) {
        return isUnauthorized(e) ? null : serverSaid(e, u.name, state.me);
      }
    },
  });
  return ok === null ? null : result;
}

async function resetPassword(u) {
  const r = await askAndRun(u, {
    title: `New password for ${u.name}`,
    text: 'At least 8 characters. Every device of theirs is signed out; tell them the new password, and they can change it in their account.',
    value: '', type: 'password', label: 'New password', ok: 'Set password',
    problem: (v) => (v ? null : 'Enter the new password.'),
  }, (v) => admin.resetPassword(u.name, v));
  if (!r) { focusUser(u.name); return; }
  note('users-status', 'users-error', `${u.name}'s password is set; ${signedOutText(r.signed_out)}.`, '');
  await loadUsers();
  focusUser(u.name);
}

const UNITS = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };

/// "50 GiB", "500 MB", "1.5T": bytes, in the binary units the page shows
/// (so "GB" is read as GiB); null for none; undefined when not a size.
function parseSize(text) {
  const t = text.trim();
  if (!t || /^(none|no quota|0)$/i.test(t)) return null;
  const m = /^(\d+(?:[.,]\d+)?)\s*([kmgtp]?)(i?b)?$/i.exec(t);
  if (!m || (!m[2] && !m[3])) return undefined;
  const n = Number(m[1].replace(',', '.')) * UNITS[m[2].toLowerCase()];
  return n >= 1 ? Math.round(n) : undefined;
}

async function setQuota(u) {
  const before = u.quota_bytes ? formatBytes(u.quota_bytes) : '';
  let unchanged = false;
  const r = await askAndRun(u, {
    title: `Quota for ${u.name}`,
    text: `${u.name} uses ${formatBytes(u.used_bytes)} now. Files, older revisions and the trash all count. Leave it empty for no quota.`,
    value: before, label: 'Quota, such as 50 GiB', ok: 'Set quota',
    problem: (v) => (parseSize(v) === undefined ? 'Write a size with its unit, such as 50 GiB or 500 MiB, or leave it empty for no quota.' : null),
  }, async (v) => {
    // The figure shown is rounded: left as it was, it changes nothing.
    if (v === before) { unchanged = true; return {}; }
    return admin.setQuota(u.name, parseSize(v));
  });
  if (!r || unchanged) { focusUser(u.name); return; }
  const quota = r.quota_bytes;
  note('users-status', 'users-error', quota ? `${u.name}'s quota is ${formatBytes(quota)}.` : `${u.name} has no quota now.`, '');
  await loadUsers();
  focusUser(u.name);
  if (u.name === state.me) usageSoon();
}

$('user-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('user-name').value.trim();
  const password = $('user-pass').value;
  const isAdmin = $('user-admin').checked;
  const problem = (text, field) => { $('user-form-error').textContent = text; $(field).focus(); };
  $('user-form-error').textContent = '';
  note('users-status', 'users-error', '', '');
  if (!name) { problem('Enter a name for the new user.', 'user-name'); return; }
  if (!password) { problem('Enter a password for them to sign in with.', 'user-pass'); return; }
  const button = $('user-submit');
  button.disabled = true;
  try {
    await admin.addUser(name, password, isAdmin);
  } catch (e) {
    if (!isUnauthorized(e)) problem(serverSaid(e, name), /password/i.test(e.detail?.message || '') ? 'user-pass' : 'user-name');
    return;
  } finally {
    button.disabled = false;
  }
  $('user-form').reset();
  $('users-status').textContent = `${name} is added${isAdmin ? ' as an administrator' : ''} and can sign in now.`;
  await loadUsers();
  $('user-name').focus();
});

// ---------- start ----------

async function enterApp() {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('who').textContent = localStorage.getItem('tessera.user') || '';
  state.me ||= localStorage.getItem('tessera.user') || '';
  const target = parseHash();
  state.view = target.view;
  state.folder = target.folder;
  if (!uploads) {
    uploads = new Uploads({
      toast,
      maxSize: state.maxSize,
      onDone: (path) => {
        state.flash.add(path);
        noteUnfinished();
        usageSoon();
        if (parentOf(path) === state.folder || path.startsWith(`${state.folder === '/' ? '' : state.folder}/`)) refreshSoon();
      },
    });
  }
  noteUnfinished();
  live.start();
  refreshUsage();
  checkAdmin();
  await refresh(true);
}

async function boot() {
  try {
    const info = await fetch(`${API}/info`).then((r) => r.json());
    state.maxSize = info.max_file_size || 0;
  } catch { /* the limit is checked by the server anyway */ }
  try {
    // The cookie is HttpOnly: asking the server is the only way to know.
    await fetch(`${API}/changes/latest`, { headers: WEB_HEADERS, credentials: 'same-origin' }).then((r) => {
      if (!r.ok) throw new ApiError(r.status, 'unauthorized', '');
    });
    await enterApp();
  } catch {
    showSignin();
  }
}

boot();
