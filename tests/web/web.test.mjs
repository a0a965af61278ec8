// What a user does in the web UI, in a real browser against a real server.
// Run by scripts/web-test.sh, which starts the server and sets the
// environment read below. The tests run in order and share one session.

import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const run = promisify(execFile);
const BASE = process.env.TESSERA_URL;
const PASSWORD = process.env.TESSERA_TEST_PASSWORD;
const BIN = process.env.TESSERA_BIN;
const CLI_HOME = process.env.TESSERA_CLI_HOME;
const SHOTS = process.env.TESSERA_SCREENSHOTS;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

let browser;
let context;
let page;
/// Requests that tried to leave the server: there must be none.
const external = [];

const row = (path) => page.locator(`#rows tr[data-path="${path}"]`);
const shot = (name, p = page) => (SHOTS ? p.screenshot({ path: join(SHOTS, `${name}.png`) }) : null);

async function menuAction(path, label) {
  await row(path).locator('.more').click();
  await page.locator('#menu [role=menuitem]', { hasText: label }).first().click();
}

/// The API as the signed-in page sees it (cookie + web header).
async function apiInPage(method, path, body) {
  return page.evaluate(async ([m, p, b]) => {
    const res = await fetch(`/api/v1${p}`, {
      method: m,
      headers: { 'X-Tessera-Web': '1', ...(b ? { 'Content-Type': 'application/json' } : {}) },
      body: b ? JSON.stringify(b) : undefined,
    });
    const text = await res.text();
    return { status: res.status, text };
  }, [method, path, body]);
}

/// A size as the page writes it (its own formatter, so the test and the UI
/// cannot disagree on rounding).
async function sizeInPage(n) {
  return page.evaluate(async (bytes) => (await import('/assets/api.js')).formatBytes(bytes), n);
}

/// The signed-in user's usage as the API reports it.
async function usageNow() {
  const res = await apiInPage('GET', '/usage');
  assert.equal(res.status, 200, res.text);
  return JSON.parse(res.text);
}

async function uploadThroughInput(name, content) {
  await page.setInputFiles('#pick-files', { name, mimeType: 'application/octet-stream', buffer: Buffer.from(content) });
}

before(async () => {
  assert.ok(BASE && PASSWORD, 'run through scripts/web-test.sh');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true, locale: 'en-US', timezoneId: 'UTC' });
  page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  // Anything that leaves the server is a failure: the UI is self-contained.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    // The browser's own pages (its PDF viewer) are not the network.
    const network = ['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol);
    if (network && url.origin !== BASE) {
      external.push(url.href);
      return route.abort();
    }
    return route.continue();
  });
});

after(async () => {
  await browser?.close();
});

// A test that fails part way must not leave a dialog over the next one.
beforeEach(async () => {
  if (!page || page.isClosed()) return;
  await page.evaluate(() => {
    for (const d of document.querySelectorAll('dialog[open]')) d.close();
    document.getElementById('menu').hidden = true;
  }).catch(() => {});
});

test('the app is served with its security headers', async () => {
  const res = await fetch(`${BASE}/`);
  assert.equal(res.status, 200);
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /default-src 'self'/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
});

test('sign in: a wrong password is refused with a message, the right one opens the files', async () => {
  await page.goto(BASE);
  await page.waitForSelector('#signin:not([hidden])');
  await page.fill('#signin-user', 'admin');
  await page.fill('#signin-pass', 'not-the-password');
  await page.click('#signin-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('signin-error').textContent.includes('Wrong'));
  await page.fill('#signin-pass', PASSWORD);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#live.on');
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'tessera_session');
  assert.ok(session, 'session cookie set');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie.includes('tessera_session')), false, 'script cannot read the token');
});

test('a cookie-signed write without the web header is refused (403)', async () => {
  const res = await page.evaluate(async () => {
    const r = await fetch('/api/v1/files/mkdir', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ path: '/forged' }) });
    return r.status;
  });
  assert.equal(res, 403);
});

test('upload through the file input: progress finishes and the file is listed', async () => {
  await uploadThroughInput('hello.txt', 'hello from the file input\n');
  const item = page.locator('#up-list li[data-path="/hello.txt"]');
  await page.locator('#up-list li.done[data-path="/hello.txt"]').waitFor({ state: 'attached' });
  assert.equal(await item.locator('progress').evaluate((p) => p.value), 1);
  await row('/hello.txt').waitFor();
  assert.match(await row('/hello.txt').innerText(), /26 B/);
});

test('the header shows the storage used once a file is in, without a bar when there is no quota', async () => {
  const usage = await usageNow();
  assert.equal(usage.user, 'admin');
  assert.equal(usage.quota_bytes, null, 'no quota yet');
  assert.ok(usage.used_bytes >= 26, `hello.txt counts: ${JSON.stringify(usage)}`);
  const expected = `${await sizeInPage(usage.used_bytes)} used`;
  await page.waitForFunction((t) => document.getElementById('usage-text').textContent === t, expected);
  assert.match(await page.locator('#usage').innerText(), /^[1-9][\d.]* (B|KiB|MiB) used$/);
  assert.ok(await page.locator('#usage').isVisible());
  assert.equal(await page.locator('#usage-bar').isVisible(), false);
});

test('names in any script upload and list as they are', async () => {
  await uploadThroughInput('Café — 東京 ünïcode.txt', 'bonjour\n');
  const item = page.locator('#up-list li.done[data-path="/Café — 東京 ünïcode.txt"]');
  await item.waitFor({ state: 'attached' });
  assert.doesNotMatch(await item.locator('.stat').textContent(), /saved as/);
  await row('/Café — 東京 ünïcode.txt').waitFor();
  await menuAction('/Café — 東京 ünïcode.txt', 'Delete');
  await row('/Café — 東京 ünïcode.txt').waitFor({ state: 'detached' });
});

test('upload of a larger file shows progress, speed and time left, then completes', async () => {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  // About 4 MB/s: slow enough to see the bars move.
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 20, downloadThroughput: 4e6, uploadThroughput: 4e6 });
  const big = Buffer.alloc(12 << 20);
  for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) & 0xff;
  await uploadThroughInput('video.mp4', big);
  await page.waitForFunction(() => {
    const li = document.querySelector('#up-list li[data-path="/video.mp4"]');
    return li && li.querySelector('progress').value > 0.15 && /left/.test(li.querySelector('.stat').textContent);
  }, null, { timeout: 20_000 });
  await shot('upload-progress');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await cdp.detach();
  await page.locator('#up-list li.done[data-path="/video.mp4"]').waitFor({ state: 'attached', timeout: 30_000 });
  await row('/video.mp4').waitFor();
  assert.equal(await page.locator('#up-overall').evaluate((p) => p.value), 1);
  // The tray folds itself once all is done; open it to show the list.
  await page.locator('#uploads.collapsed').waitFor();
  await page.click('#up-toggle');
  await shot('upload-done');
  await page.click('#up-toggle');
});

test('upload by drag and drop', async () => {
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['dropped content\n'], 'dropped.txt', { type: 'text/plain' }));
    dt.items.add(new File(['# Second drop\n\nNotes dropped on the page:\n\n- shown as text, never as a page\n- `<script>` stays text\n'], 'second drop.md', { type: 'text/markdown' }));
    return dt;
  });
  await page.dispatchEvent('#drop', 'dragenter', { dataTransfer });
  await page.dispatchEvent('#drop', 'dragover', { dataTransfer });
  await page.dispatchEvent('#drop', 'drop', { dataTransfer });
  await page.locator('#up-list li.done[data-path="/dropped.txt"]').waitFor({ state: 'attached' });
  await page.locator('#up-list li.done[data-path="/second drop.md"]').waitFor({ state: 'attached' });
  await row('/dropped.txt').waitFor();
  await row('/second drop.md').waitFor();
});

test('upload a whole folder (nested files) through the folder picker', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-web-'));
  const album = join(dir, 'Album');
  mkdirSync(join(album, 'raw'), { recursive: true });
  writeFileSync(join(album, 'one.txt'), 'one\n');
  writeFileSync(join(album, 'raw', 'two.txt'), 'two\n');
  await page.setInputFiles('#pick-folder', album);
  await page.locator('#up-list li.done[data-path="/Album/one.txt"]').waitFor({ state: 'attached' });
  await page.locator('#up-list li.done[data-path="/Album/raw/two.txt"]').waitFor({ state: 'attached' });
  await row('/Album').waitFor();
});

test('cancel an upload under way: it stops and nothing is listed', async () => {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 20, downloadThroughput: 1e6, uploadThroughput: 1e6 });
  await uploadThroughInput('cancel me.bin', Buffer.alloc(8 << 20, 1));
  const item = page.locator('#up-list li[data-path="/cancel me.bin"]');
  await page.waitForFunction(() => document.querySelector('#up-list li[data-path="/cancel me.bin"] progress')?.value > 0.02);
  await item.getByRole('button', { name: /Cancel/ }).click();
  await page.locator('#up-list li.cancelled[data-path="/cancel me.bin"]').waitFor({ state: 'attached' });
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await cdp.detach();
  // The server ends the session and the file's syncing mark with it.
  await row('/cancel me.bin').waitFor({ state: 'detached', timeout: 3000 });
  const listed = JSON.parse((await apiInPage('GET', '/files/list?path=/')).text);
  const left = listed.entries.find((e) => e.name === 'cancel me.bin');
  assert.equal(left, undefined, `still listed: ${JSON.stringify(left)}`);
});

/// SHA-256 of a file as the server returns it, computed in the page.
async function serverSha(path) {
  return page.evaluate(async (p) => {
    const res = await fetch(`/api/v1/files/content?path=${encodeURIComponent(p)}`);
    const digest = await crypto.subtle.digest('SHA-256', await res.arrayBuffer());
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
  }, path);
}

function localFile(name, size, seed) {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-web-'));
  const data = Buffer.alloc(size);
  let x = seed;
  for (let i = 0; i < size; i += 4) { x = (x * 1103515245 + 12345) >>> 0; data.writeUInt32LE(x, i); }
  const path = join(dir, name);
  writeFileSync(path, data);
  return { path, sha: createHash('sha256').update(data).digest('hex') };
}

async function throttle(bytesPerSecond) {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 10, downloadThroughput: bytesPerSecond, uploadThroughput: bytesPerSecond });
  return {
    offline: (yes) => cdp.send('Network.emulateNetworkConditions', { offline: yes, latency: 10, downloadThroughput: bytesPerSecond, uploadThroughput: bytesPerSecond }),
    off: async () => {
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
      await cdp.detach();
    },
  };
}

test('an upload interrupted by a reload resumes where the server stopped', async () => {
  // Larger than one 8 MiB PATCH: the first one completes before the reload.
  const file = localFile('resume.bin', 12 << 20, 11);
  const net = await throttle(4e6);
  try {
    await page.setInputFiles('#pick-files', file.path);
    await page.waitForFunction(() => document.querySelector('#up-list li[data-path="/resume.bin"] progress')?.value > 0.75, null, { timeout: 20_000 });
    // Reloaded while still slow, so the upload cannot finish first.
    await page.reload();
  } finally {
    await net.off();
  }
  await page.locator('#resume-note:not([hidden])').waitFor();
  assert.match(await page.locator('#resume-note').innerText(), /resume\.bin/);
  const seen = [];
  const listen = (r) => { if (r.url().includes('/api/v1/tus/')) seen.push([r.request().method(), r.status(), r.headers()['upload-offset']]); };
  page.on('response', listen);
  await page.setInputFiles('#pick-files', file.path);
  await page.locator('#up-list li.done[data-path="/resume.bin"]').waitFor({ state: 'attached', timeout: 20_000 });
  page.off('response', listen);
  const head = seen.find(([m]) => m === 'HEAD');
  assert.ok(head, `resumed with HEAD: ${JSON.stringify(seen)}`);
  assert.ok(Number(head[2]) >= 8 << 20, `continued at least after the first PATCH: ${JSON.stringify(seen)}`);
  assert.equal(seen.filter(([m]) => m === 'POST').length, 0, 'no new upload was created');
  assert.equal(await serverSha('/resume.bin'), file.sha);
  await page.locator('#resume-note[hidden]').waitFor({ state: 'attached' });
});

test('an interrupted upload can be forgotten: the note goes and the server ends the session', async () => {
  const file = localFile('abandoned.bin', 12 << 20, 5);
  const net = await throttle(4e6);
  try {
    await page.setInputFiles('#pick-files', file.path);
    await page.waitForFunction(() => document.querySelector('#up-list li[data-path="/abandoned.bin"] progress')?.value > 0.2, null, { timeout: 20_000 });
    await page.reload();
  } finally {
    await net.off();
  }
  await page.locator('#resume-note:not([hidden])').waitFor();
  const url = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tessera.tus:')).map((k) => localStorage.getItem(k))[0]);
  assert.ok(url, 'the upload URL was kept');
  await page.locator('#resume-note button', { hasText: 'Forget' }).click();
  await page.locator('#resume-note[hidden]').waitFor({ state: 'attached' });
  let status = 0;
  for (let i = 0; i < 50 && status !== 404; i++) {
    status = await page.evaluate(async (u) => (await fetch(u, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })).status, url);
    if (status !== 404) await page.waitForTimeout(100);
  }
  assert.equal(status, 404, 'the server session is gone');
});

test('an upload survives a dropped network: it retries and completes', async () => {
  const file = localFile('flaky.bin', 5 << 20, 23);
  const net = await throttle(2e6);
  try {
    await page.setInputFiles('#pick-files', file.path);
    await page.waitForFunction(() => document.querySelector('#up-list li[data-path="/flaky.bin"] progress')?.value > 0.3, null, { timeout: 20_000 });
    await net.offline(true);
    await page.waitForFunction(() => /retrying/.test(document.querySelector('#up-list li[data-path="/flaky.bin"] .stat')?.textContent), null, { timeout: 10_000 });
    await page.waitForTimeout(500);
    await net.offline(false);
  } finally {
    await net.off();
  }
  await page.locator('#up-list li.done[data-path="/flaky.bin"]').waitFor({ state: 'attached', timeout: 30_000 });
  assert.equal(await serverSha('/flaky.bin'), file.sha);
  await row('/flaky.bin').waitFor();
});

test('create a folder, rename a file, move it into the folder', async () => {
  await page.click('#btn-mkdir');
  await page.fill('#dialog-input', 'Projects');
  await page.click('#dialog-ok');
  await row('/Projects').waitFor();

  await menuAction('/hello.txt', 'Rename');
  await page.fill('#dialog-input', 'greeting.txt');
  await page.click('#dialog-ok');
  await row('/greeting.txt').waitFor();
  assert.equal(await row('/hello.txt').count(), 0);

  await menuAction('/dropped.txt', 'Move');
  await page.locator('#dialog-extra button', { hasText: 'Projects' }).click();
  await page.waitForFunction(() => document.querySelector('#dialog-extra p').textContent.includes('/Projects'));
  await page.click('#dialog-ok');
  await row('/dropped.txt').waitFor({ state: 'detached' });

  await row('/Projects').locator('a').click();
  await page.waitForFunction(() => location.hash === '#/files/Projects');
  await row('/Projects/dropped.txt').waitFor();
  assert.match(await page.locator('#crumbs').innerText(), /My files\s*›\s*Projects/);
  await page.locator('#crumbs a', { hasText: 'My files' }).click();
  await row('/Projects').waitFor();
});

test('a renamed file that exists already gets a clear conflict message', async () => {
  await menuAction('/greeting.txt', 'Rename');
  await page.fill('#dialog-input', 'video.mp4');
  await page.click('#dialog-ok');
  await page.waitForFunction(() => /already exists/.test(document.getElementById('dialog-error').textContent));
  await page.click('#dialog-cancel');
});

test('keyboard: arrows move between rows, Enter opens a folder, Backspace goes up', async () => {
  await row('/Projects').focus();
  await page.keyboard.press('ArrowDown');
  const focused = await page.evaluate(() => document.activeElement.dataset.path);
  assert.notEqual(focused, '/Projects');
  await page.keyboard.press('ArrowUp');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.path), '/Projects');
  await page.keyboard.press('Enter');
  await row('/Projects/dropped.txt').waitFor();
  await page.locator('#rows tr').first().focus();
  await page.keyboard.press('Backspace');
  await row('/Projects').waitFor();
  await page.click('#up-clear');
  await page.evaluate(() => { document.getElementById('toast').hidden = true; });
  await shot('desktop-list');
});

test('preview shows text as text and images inline', async () => {
  await row('/second drop.md').locator('a').click();
  await page.waitForFunction(() => document.querySelector('#preview-body pre')?.textContent.includes('`<script>` stays text') && !document.querySelector('#preview-body script'));
  await shot('preview');
  await page.click('#preview-close');
  // A tiny PNG, uploaded and previewed.
  const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
  await uploadThroughInput('dot.png', png);
  await row('/dot.png').waitFor();
  await row('/dot.png').locator('a').click();
  await page.waitForFunction(() => {
    const img = document.querySelector('#preview-body img');
    return img && img.complete && img.naturalWidth === 1;
  });
  await page.click('#preview-close');
});

test('revisions: list, download a revision, restore an older one', async () => {
  await uploadThroughInput('notes.txt', 'first version\n');
  await page.locator('#up-list li.done[data-path="/notes.txt"]').waitFor({ state: 'attached' });
  await uploadThroughInput('notes.txt', 'second version, longer\n');
  await page.waitForFunction(() => document.querySelectorAll('#up-list li.done[data-path="/notes.txt"]').length === 2);
  await menuAction('/notes.txt', 'Revisions');
  await page.locator('#panel-body li[data-rev="2"]').waitFor();
  const href = await page.locator('#panel-body li[data-rev="1"] a').getAttribute('href');
  const old = await page.evaluate(async (u) => (await fetch(u)).text(), href);
  assert.equal(old, 'first version\n');
  await shot('revisions');
  await page.locator('#panel-body li[data-rev="1"] button', { hasText: 'Restore' }).click();
  await page.locator('#panel-body li[data-rev="3"] .current').waitFor();
  const now = await apiInPage('GET', '/files/content?path=/notes.txt');
  assert.equal(now.text, 'first version\n');
  await page.click('#panel-close');
});

test('pin a revision: it shows as pinned, stays pinned when the panel opens again, and unpins', async () => {
  const pinnedRevs = async () => JSON.parse((await apiInPage('GET', '/files/revisions?path=/notes.txt')).text)
    .revisions.filter((r) => r.pinned).map((r) => r.rev);
  assert.deepEqual(await pinnedRevs(), []);
  await menuAction('/notes.txt', 'Revisions');
  const rev1 = page.locator('#panel-body li[data-rev="1"]');
  await rev1.waitFor();
  assert.equal(await rev1.locator('.pin-mark').count(), 0);
  assert.match(await page.locator('#panel-body .hint').innerText(), /kept whatever the retention schedule says/);
  await rev1.getByRole('button', { name: 'Pin revision 1', exact: true }).click();
  await rev1.locator('.pin-mark', { hasText: 'Pinned' }).waitFor();
  assert.match(await rev1.locator('.pin-mark').getAttribute('title'), /kept whatever the retention schedule says/);
  // The button that was pressed keeps the focus, now offering the reverse.
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Unpin revision 1');
  assert.equal(await page.locator('#panel-body li[data-rev="2"] .pin-mark').count(), 0);
  assert.deepEqual(await pinnedRevs(), [1]);

  await page.click('#panel-close');
  await menuAction('/notes.txt', 'Revisions');
  await rev1.locator('.pin-mark', { hasText: 'Pinned' }).waitFor();
  assert.equal(await page.locator('#panel-body .pin-mark').count(), 1);

  await rev1.getByRole('button', { name: 'Unpin revision 1', exact: true }).click();
  await rev1.getByRole('button', { name: 'Pin revision 1', exact: true }).waitFor();
  assert.equal(await rev1.locator('.pin-mark').count(), 0);
  assert.deepEqual(await pinnedRevs(), []);
  await page.click('#panel-close');
  await menuAction('/notes.txt', 'Revisions');
  await rev1.getByRole('button', { name: 'Pin revision 1', exact: true }).waitFor();
  assert.equal(await page.locator('#panel-body .pin-mark').count(), 0);
  await page.click('#panel-close');
});

test('share a link with a password: a visitor without an account unlocks it on a phone and downloads; revoking ends it', async () => {
  await menuAction('/notes.txt', 'Share link…');
  await page.locator('#link-expiry').selectOption({ label: 'Expires in 7 days' });
  await page.fill('#link-password', 'link pass phrase');
  await page.getByRole('button', { name: 'Create link', exact: true }).click();
  const address = await page.locator('#link-url').inputValue();
  assert.match(address, new RegExp(`^${BASE}/s/[A-Za-z0-9_-]{22}$`));
  await page.locator('#panel-body .links li', { hasText: 'password' }).waitFor();
  await shot('links-panel');

  // A visitor: no session cookie, a phone's screen.
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, locale: 'en-US', timezoneId: 'UTC' });
  const v = await phone.newPage();
  const first = await v.goto(address);
  assert.equal(first.status(), 401);
  assert.equal(await v.locator('text=notes.txt').count(), 0, 'the name shows before the password');
  await v.fill('#password', 'a wrong guess');
  await v.click('button[type=submit]');
  await v.locator('.error', { hasText: 'not right' }).waitFor();
  await v.fill('#password', 'link pass phrase');
  await v.click('button[type=submit]');
  await v.locator('h1', { hasText: 'notes.txt' }).waitFor();
  assert.ok(await v.evaluate(() => document.documentElement.scrollWidth <= innerWidth), 'the link page overflows a phone');
  await shot('link-page-phone', v);
  const href = await v.locator('a', { hasText: 'Download' }).getAttribute('href');
  // The page runs no script and may fetch nothing: download as the
  // browser would, with the visitor's cookie.
  const download = await phone.request.get(new URL(href, address).href);
  assert.equal(download.status(), 200);
  assert.equal(await download.text(), 'first version\n');

  await page.locator('#panel-body .links button', { hasText: 'Revoke' }).click();
  await page.locator('#panel-body p', { hasText: 'No links yet' }).waitFor();
  const after = await v.goto(address);
  assert.equal(after.status(), 404);
  await phone.close();
  await page.click('#panel-close');
});

test('a file request: a visitor sends a file with progress, sees nothing of the folder, and a taken name gets a number', async () => {
  await page.evaluate(() => { location.hash = '#/files/'; });
  await row('/Projects').waitFor();
  await menuAction('/Projects', 'Share link…');
  await page.check('#link-upload-only');
  await page.getByRole('button', { name: 'Create link', exact: true }).click();
  const address = await page.locator('#link-url').inputValue();
  await page.locator('#panel-body .links li', { hasText: 'upload only' }).waitFor();
  await page.click('#panel-close');

  const visitor = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, locale: 'en-US', timezoneId: 'UTC' });
  const v = await visitor.newPage();
  assert.equal((await v.goto(address)).status(), 200);
  const existing = JSON.parse((await apiInPage('GET', '/files/list?path=/Projects')).text).entries.map((e) => e.name);
  const text = await v.locator('main').innerText();
  for (const name of existing) assert.ok(!text.includes(name), `the page shows ${name}`);
  const taken = existing.find((n) => n.includes('.')) ?? existing[0];
  await v.setInputFiles('#files', [
    { name: 'from-visitor.txt', mimeType: 'text/plain', buffer: Buffer.from('sent through a link\n') },
    ...(taken ? [{ name: taken, mimeType: 'text/plain', buffer: Buffer.from('not a replacement\n') }] : []),
  ]);
  await v.click('button[type=submit]');
  await v.locator('#sent li[data-name="from-visitor.txt"] .done').waitFor();
  if (taken) await v.locator(`#sent li[data-name="${taken}"] .done`, { hasText: 'sent as' }).waitFor();
  assert.equal(await v.locator('#sent progress').first().evaluate((p) => p.value), 1);
  await shot('file-request-phone', v);
  const now = await apiInPage('GET', '/files/content?path=/Projects/from-visitor.txt');
  assert.equal(now.text, 'sent through a link\n');
  await visitor.close();
});

test('with a quota the header shows the share used, and an upload over it fails with the server\'s numbers', async () => {
  const token = (await context.cookies()).find((c) => c.name === 'tessera_session').value;
  // As the administrator, through the admin API with a bearer token.
  const setQuota = async (quota) => {
    const res = await fetch(`${BASE}/api/v1/admin/users/admin/quota`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ quota_bytes: quota }),
    });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    return JSON.parse(text);
  };
  const { used_bytes: used } = await usageNow();
  const quota = used + (1 << 20);
  try {
    assert.equal((await setQuota(quota)).quota_bytes, quota);
    // A quota set elsewhere shows the next time the page loads.
    await page.reload();
    await row('/notes.txt').waitFor();
    const expected = `${await sizeInPage(used)} of ${await sizeInPage(quota)} used`;
    await page.waitForFunction((t) => document.getElementById('usage-text').textContent === t, expected);
    assert.match(expected, / of /);
    assert.ok(await page.locator('#usage-bar').isVisible(), 'a bar with a quota');
    const share = await page.locator('#usage-bar').evaluate((m) => m.value);
    assert.ok(Math.abs(share - used / quota) < 1e-6, `bar at ${share}`);
    assert.match(await page.locator('#usage').getAttribute('title'), /% of your storage quota/);

    // Made in the page (a drop), 3 MiB: over what is left.
    const over = 3 << 20;
    const dataTransfer = await page.evaluateHandle((n) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new ArrayBuffer(n)], 'over quota.bin'));
      return dt;
    }, over);
    await page.dispatchEvent('#drop', 'drop', { dataTransfer });
    const item = page.locator('#up-list li.failed[data-path="/over quota.bin"]');
    await item.waitFor();
    const message = await item.locator('.stat').innerText();
    assert.match(message, /quota/i);
    assert.doesNotMatch(message, /storage is full/);
    assert.ok(message.includes(String(over)) && message.includes(String(quota)), `names the sizes: ${message}`);
    assert.match(await page.locator('#toast').innerText(), /over quota\.bin: .*quota/i);
    assert.equal(await row('/over quota.bin').count(), 0);
    assert.equal((await usageNow()).used_bytes, used, 'nothing was stored');
    await page.click('#up-clear');
  } finally {
    await setQuota(null);
  }
  // Without the quota again, a change brings the plain figure back.
  await uploadThroughInput('after quota.txt', 'fits again\n');
  await row('/after quota.txt').waitFor();
  await page.waitForFunction(() => /^[\d.]+ (B|KiB|MiB) used$/.test(document.getElementById('usage-text').textContent));
  assert.equal(await page.locator('#usage-bar').isVisible(), false);
  await menuAction('/after quota.txt', 'Delete');
  await row('/after quota.txt').waitFor({ state: 'detached' });
});

test('delete to the trash, restore, delete again and delete forever', async () => {
  await menuAction('/greeting.txt', 'Delete');
  await row('/greeting.txt').waitFor({ state: 'detached' });
  await page.click('#nav-trash');
  await row('/greeting.txt').waitFor();
  await shot('trash');
  await menuAction('/greeting.txt', 'Restore');
  await row('/greeting.txt').waitFor({ state: 'detached' });
  await page.click('#nav-files');
  await row('/greeting.txt').waitFor();

  await row('/greeting.txt').focus();
  await page.keyboard.press('Delete');
  await row('/greeting.txt').waitFor({ state: 'detached' });
  await page.click('#nav-trash');
  await menuAction('/greeting.txt', 'Delete forever');
  await page.click('#dialog-ok');
  await row('/greeting.txt').waitFor({ state: 'detached' });
  const listed = JSON.parse((await apiInPage('GET', '/trash')).text);
  assert.equal(listed.entries.some((e) => e.path === '/greeting.txt'), false);
  await page.click('#nav-files');
  await row('/Projects').waitFor();
});

test('Empty trash removes for good everything the trash showed', async () => {
  for (const name of ['old draft.txt', 'older draft.txt']) {
    await uploadThroughInput(name, `${name}\n`);
    await row(`/${name}`).waitFor();
    await menuAction(`/${name}`, 'Delete');
    await row(`/${name}`).waitFor({ state: 'detached' });
  }
  await page.click('#nav-trash');
  await row('/old draft.txt').waitFor();
  await row('/older draft.txt').waitFor();
  await page.click('#btn-empty-trash');
  await page.click('#dialog-ok');
  await row('/old draft.txt').waitFor({ state: 'detached' });
  await row('/older draft.txt').waitFor({ state: 'detached' });
  const listed = JSON.parse((await apiInPage('GET', '/trash')).text);
  assert.deepEqual(listed.entries, [], 'the trash is empty');
  assert.equal(await page.locator('#btn-empty-trash').isDisabled(), true);
  await page.click('#nav-files');
  await row('/Projects').waitFor();
});

test('a file uploaded with the command-line client appears within 2 seconds, without reload', async () => {
  const env = { ...process.env, TESSERA_CONFIG_DIR: CLI_HOME, TESSERA_SERVER: BASE };
  const login = run(BIN, ['login', '--server', BASE, '--user', 'admin', '--password-stdin', '--device', 'test laptop'], { env });
  login.child.stdin.end(`${PASSWORD}\n`);
  await login;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-web-'));
  const local = join(dir, 'from-cli.txt');
  writeFileSync(local, 'sent by the command line\n');
  const navigations = [];
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations.push(f.url()); });
  await run(BIN, ['put', local, '/from-cli.txt'], { env });
  const start = Date.now();
  await row('/from-cli.txt').waitFor({ timeout: 2000 });
  const took = Date.now() - start;
  assert.ok(took < 2000, `appeared after ${took} ms`);
  assert.deepEqual(navigations, [], 'no reload');
});

test('an upload started elsewhere shows as syncing, live, until it completes', async () => {
  // Another client starts a TUS upload and finishes it a moment later.
  const token = (await context.cookies()).find((c) => c.name === 'tessera_session').value;
  const auth = { Authorization: `Bearer ${token}`, 'Tus-Resumable': '1.0.0' };
  const created = await fetch(`${BASE}/api/v1/tus/`, {
    method: 'POST',
    headers: { ...auth, 'Upload-Length': '5', 'Upload-Metadata': `path ${Buffer.from('/elsewhere.txt').toString('base64')}` },
  });
  assert.equal(created.status, 201);
  await row('/elsewhere.txt').locator('.badge', { hasText: 'syncing' }).waitFor({ timeout: 2000 });
  const done = await fetch(new URL(created.headers.get('location'), BASE), {
    method: 'PATCH',
    headers: { ...auth, 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
    body: 'hello',
  });
  assert.equal(done.status, 204);
  await row('/elsewhere.txt').locator('.badge').waitFor({ state: 'detached', timeout: 2000 });
});

test('sort by size, and download a file from its menu', async () => {
  const names = () => page.locator('#rows tr[data-kind="file"]').evaluateAll((rows) => rows.map((r) => r.dataset.path));
  await page.locator('#list-head button', { hasText: 'Size' }).click();
  const asc = await names();
  assert.equal(asc.at(-1), '/video.mp4', `largest last: ${asc}`);
  await page.locator('#list-head button', { hasText: 'Size' }).click();
  assert.equal((await names())[0], '/video.mp4');
  await page.locator('#list-head button', { hasText: 'Name' }).click();
  assert.equal(await page.locator('#list-head th[aria-sort="ascending"]').innerText(), 'Name ↑');

  await row('/from-cli.txt').locator('.more').click();
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('#menu [role=menuitem]', { hasText: 'Download' }).click(),
  ]);
  assert.equal(download.suggestedFilename(), 'from-cli.txt');
  assert.equal(readFileSync(await download.path(), 'utf8'), 'sent by the command line\n');
});

test('audio previews play in the page', async () => {
  // One second of silence as a WAV file.
  const rate = 8000;
  const wav = Buffer.alloc(44 + rate);
  wav.write('RIFF', 0); wav.writeUInt32LE(36 + rate, 4); wav.write('WAVEfmt ', 8);
  wav.writeUInt32LE(16, 16); wav.writeUInt16LE(1, 20); wav.writeUInt16LE(1, 22);
  wav.writeUInt32LE(rate, 24); wav.writeUInt32LE(rate, 28); wav.writeUInt16LE(1, 32); wav.writeUInt16LE(8, 34);
  wav.write('data', 36); wav.writeUInt32LE(rate, 40); wav.fill(128, 44);
  await uploadThroughInput('silence.wav', wav);
  await row('/silence.wav').waitFor();
  await row('/silence.wav').locator('a').click();
  await page.waitForFunction(() => {
    const a = document.querySelector('#preview-body audio');
    return a && (a.error || a.readyState >= 1);
  });
  const audio = await page.locator('#preview-body audio').evaluate((a) => ({ error: a.error?.message ?? a.error?.code, duration: a.duration }));
  assert.equal(audio.error, undefined, `the audio failed to load: ${JSON.stringify(audio)}`);
  assert.ok(Math.abs(audio.duration - 1) < 0.01, `duration ${audio.duration}`);
  await page.keyboard.press('Escape');
  await page.locator('#preview[open]').waitFor({ state: 'detached' });
});

test('PDF previews open in the browser\'s viewer', async () => {
  const pdf = ['%PDF-1.4', '1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj', '2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj',
    '3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj', 'trailer<</Root 1 0 R>>', '%%EOF'].join('\n');
  await uploadThroughInput('doc.pdf', pdf);
  await row('/doc.pdf').waitFor();
  await row('/doc.pdf').locator('a').click();
  await page.locator('#preview-body iframe').waitFor();
  // Chromium's viewer loads into the frame: the PDF was shown, not downloaded.
  let viewer = false;
  for (let i = 0; i < 50 && !viewer; i++) {
    viewer = page.frames().some((f) => f.url().startsWith('chrome-extension://'));
    if (!viewer) await page.waitForTimeout(100);
  }
  assert.ok(viewer, `frames: ${page.frames().map((f) => f.url())}`);
  await page.keyboard.press('Escape');
  await page.locator('#preview[open]').waitFor({ state: 'detached' });
});

test('select several files with the checkboxes and the keyboard, move them, then delete them together', async () => {
  await uploadThroughInput('pick-a.txt', 'a\n');
  await uploadThroughInput('pick-b.txt', 'b\n');
  await row('/pick-a.txt').waitFor();
  await row('/pick-b.txt').waitFor();
  await row('/pick-a.txt').locator('.pick').check();
  await row('/pick-b.txt').focus();
  await page.keyboard.press('Space');
  await page.locator('#selection:not([hidden])').waitFor();
  assert.equal(await page.locator('#sel-count').innerText(), '2 selected');
  await page.click('#sel-move');
  await page.locator('#dialog-extra button', { hasText: 'Album' }).click();
  await page.waitForFunction(() => document.querySelector('#dialog-extra p').textContent.includes('/Album'));
  await page.click('#dialog-ok');
  await row('/pick-a.txt').waitFor({ state: 'detached' });
  await row('/pick-b.txt').waitFor({ state: 'detached' });
  await page.locator('#selection[hidden]').waitFor({ state: 'attached' });

  await page.evaluate(() => { location.hash = '#/files/Album'; });
  await row('/Album/pick-a.txt').waitFor();
  await row('/Album/pick-a.txt').focus();
  await page.keyboard.press('Control+A');
  assert.equal(await page.locator('#sel-count').innerText(), `${await page.locator('#rows tr').count()} selected`);
  await page.keyboard.press('Escape');
  await page.locator('#selection[hidden]').waitFor({ state: 'attached' });
  await row('/Album/pick-a.txt').locator('.pick').check();
  await row('/Album/pick-b.txt').locator('.pick').check();
  await page.click('#sel-delete');
  await row('/Album/pick-a.txt').waitFor({ state: 'detached' });
  await row('/Album/pick-b.txt').waitFor({ state: 'detached' });
  const trashed = JSON.parse((await apiInPage('GET', '/trash')).text).entries.map((e) => e.path);
  assert.ok(trashed.includes('/Album/pick-a.txt') && trashed.includes('/Album/pick-b.txt'), `trash: ${trashed}`);
  await page.locator('#crumbs a', { hasText: 'My files' }).click();
  await row('/Projects').waitFor();
});

test('keyboard only: Shift+F10 opens the actions, arrows and Enter pick one', async () => {
  await row('/second drop.md').focus();
  await page.keyboard.press('Shift+F10');
  await page.locator('#menu:not([hidden])').waitFor();
  // Preview, Download, Rename, …: two steps down is Rename.
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowDown');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Rename');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('renamed by keys.md');
  await page.keyboard.press('Enter');
  await row('/renamed by keys.md').waitFor();
});

test('download a folder as a zip holding its files', async () => {
  await page.evaluate(() => { location.hash = '#/files/Projects'; });
  await row('/Projects/dropped.txt').waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#btn-zip')]);
  assert.equal(download.suggestedFilename(), 'Projects.zip');
  const file = await download.path();
  const zip = readFileSync(file);
  assert.equal(zip.readUInt32LE(0), 0x04034b50, 'starts with a local file header');
  assert.ok(zip.includes(Buffer.from('dropped.txt')), 'lists dropped.txt');
  assert.ok(zip.includes(Buffer.from('dropped content\n')), 'holds its bytes');
  assert.ok(zip.includes(Buffer.from([0x50, 0x4b, 0x05, 0x06])), 'has an end of central directory');
  await page.locator('#crumbs a', { hasText: 'My files' }).click();
  await row('/Projects').waitFor();
});

// ---------- search ----------

const searchPaths = (p = page) => p.locator('#search-results li').evaluateAll((lis) => lis.map((li) => li.dataset.path));

/// Waits until the results are these paths, in any order.
async function searchShows(paths, p = page) {
  const want = [...paths].sort();
  try {
    await p.waitForFunction((w) => {
      const got = [...document.querySelectorAll('#search-results li')].map((li) => li.dataset.path).sort();
      return !document.getElementById('search-panel').hidden && JSON.stringify(got) === JSON.stringify(w);
    }, want, { timeout: 5000 });
  } catch (e) {
    assert.fail(`results ${JSON.stringify(await searchPaths(p))}, wanted ${JSON.stringify(want)}: ${e.message}`);
  }
}

const LEDGERS = ['/Finance/Ledgers', '/Finance/Ledger 2024.csv', '/Finance/Archive/old ledger.txt'];

test('search as you type: names in any case across nested folders, the match marked, the trash left out; Escape clears', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-web-'));
  const finance = join(dir, 'Finance');
  mkdirSync(join(finance, 'Archive'), { recursive: true });
  mkdirSync(join(finance, 'Ledgers'), { recursive: true });
  writeFileSync(join(finance, 'Ledger 2024.csv'), 'date,amount\n2024-01-02,12\n');
  writeFileSync(join(finance, 'Archive', 'old ledger.txt'), 'the old ledger\n');
  writeFileSync(join(finance, 'Ledgers', 'inside.txt'), 'inside\n');
  await page.setInputFiles('#pick-folder', finance);
  for (const p of ['/Finance/Ledger 2024.csv', '/Finance/Archive/old ledger.txt', '/Finance/Ledgers/inside.txt']) {
    await page.locator(`#up-list li.done[data-path="${p}"]`).waitFor({ state: 'attached' });
  }
  await uploadThroughInput('ledger draft.txt', 'thrown away\n');
  await row('/ledger draft.txt').waitFor();
  await menuAction('/ledger draft.txt', 'Delete');
  await row('/ledger draft.txt').waitFor({ state: 'detached' });

  // "/" goes to the box from the list.
  await row('/Finance').waitFor();
  await row('/Finance').focus();
  await page.keyboard.press('/');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'search-input');
  assert.equal(await page.inputValue('#search-input'), '', 'the "/" is not typed');
  await page.keyboard.type('lEdG', { delay: 40 });
  await searchShows(LEDGERS);
  assert.equal(await page.getAttribute('#search-input', 'aria-expanded'), 'true');
  assert.equal(await page.locator('#search-status').innerText(), '3 matches');
  const marks = await page.locator('#search-results li mark').allInnerTexts();
  assert.deepEqual(marks.map((m) => m.toLowerCase()), ['ledg', 'ledg', 'ledg'], `marked: ${marks}`);
  assert.ok(marks.includes('Ledg') && marks.includes('ledg'), `the name's own case is kept: ${marks}`);
  const old = page.locator('#search-results li[data-path="/Finance/Archive/old ledger.txt"]');
  assert.equal(await old.locator('.search-name').innerText(), 'old ledger.txt');
  assert.match(await old.locator('.search-where').innerText(), new RegExp(`^in /Finance/Archive · ${await sizeInPage(15)} · `));
  assert.equal(await page.locator('#search-results li[data-path="/Finance/Ledgers"] .search-where').innerText(), 'in /Finance');

  // Narrowed as more is typed.
  await page.keyboard.type('er 2', { delay: 40 });
  await searchShows(['/Finance/Ledger 2024.csv']);
  assert.equal(await page.locator('#search-status').innerText(), '1 match');

  await page.fill('#search-input', 'no such name anywhere');
  await page.waitForFunction(() => document.getElementById('search-status').textContent === 'Nothing\'s name holds “no such name anywhere”');
  assert.equal(await page.locator('#search-results li').count(), 0);

  await page.keyboard.press('Escape');
  assert.equal(await page.inputValue('#search-input'), '');
  assert.ok(await page.locator('#search-panel').isHidden());
  assert.equal(await page.getAttribute('#search-input', 'aria-expanded'), 'false');
});

test('search: too many matches asks for more text, and an answer that comes late for older text is not shown', async () => {
  const made = await page.evaluate(async () => {
    const mkdir = (path) => fetch('/api/v1/files/mkdir', {
      method: 'POST', headers: { 'X-Tessera-Web': '1', 'Content-Type': 'application/json' }, body: JSON.stringify({ path }),
    }).then((r) => r.status);
    const statuses = [await mkdir('/Finance/Crowd')];
    for (let i = 1; i <= 51; i++) statuses.push(await mkdir(`/Finance/Crowd/Crowded ${String(i).padStart(2, '0')}`));
    return statuses;
  });
  assert.ok(made.every((s) => s === 200 || s === 201), `mkdir: ${made}`);
  await page.click('#search-input');
  await page.keyboard.type('CROWDED');
  await page.waitForFunction(() => document.getElementById('search-status').textContent === 'More match: type more to narrow it down');
  assert.equal(await page.locator('#search-results li').count(), 50);
  await page.keyboard.type(' 5');
  await searchShows(['/Finance/Crowd/Crowded 50', '/Finance/Crowd/Crowded 51']);
  await page.keyboard.press('Escape');

  // The answer for "ledg" is held back while "ledger 2" is typed: only one
  // search is asked at a time, the latest text next, and the older answer
  // never shows.
  const events = [];
  let held = null;
  const slow = (route) => {
    const q = new URL(route.request().url()).searchParams.get('q');
    events.push(`ask ${q}`);
    if (q !== 'ledg') return route.continue();
    held = new Promise((resolve) => { setTimeout(resolve, 1000); })
      .then(() => { events.push(`answer ${q}`); return route.continue(); });
    return held;
  };
  await page.route('**/api/v1/search?*', slow);
  try {
    await page.click('#search-input');
    await page.evaluate(() => {
      window.searchMostShown = 0;
      new MutationObserver(() => {
        window.searchMostShown = Math.max(window.searchMostShown, document.querySelectorAll('#search-results li').length);
      }).observe(document.getElementById('search-results'), { childList: true });
    });
    await Promise.all([
      page.waitForRequest((r) => r.url().includes('/api/v1/search?') && new URL(r.url()).searchParams.get('q') === 'ledg'),
      page.keyboard.type('ledg'),
    ]);
    await page.keyboard.type('er 2');
    await searchShows(['/Finance/Ledger 2024.csv']);
    await held;
    await page.waitForTimeout(200);
    assert.deepEqual(await searchPaths(), ['/Finance/Ledger 2024.csv']);
    assert.deepEqual(events.slice(events.indexOf('ask ledg')), ['ask ledg', 'answer ledg', 'ask ledger 2']);
    assert.equal(await page.evaluate(() => window.searchMostShown), 1, 'the answer for "ledg" was shown');
  } finally {
    await page.unroute('**/api/v1/search?*', slow);
  }
  await page.keyboard.press('Escape');
});

test('search: arrows and Enter open a folder result; a file result opens its folder, its row focused, and its preview', async () => {
  await row('/Finance').focus();
  await page.keyboard.press('/');
  await page.keyboard.type('LEDGER');
  await searchShows(LEDGERS);
  const order = await searchPaths();
  const steps = order.indexOf('/Finance/Ledgers') + 1;
  for (let i = 0; i < steps; i++) await page.keyboard.press('ArrowDown');
  const active = await page.getAttribute('#search-input', 'aria-activedescendant');
  assert.equal(await page.getAttribute(`#${active}`, 'data-path'), '/Finance/Ledgers');
  assert.equal(await page.getAttribute(`#${active}`, 'aria-selected'), 'true');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash === '#/files/Finance/Ledgers');
  await row('/Finance/Ledgers/inside.txt').waitFor();
  assert.ok(await page.locator('#search-panel').isHidden());
  assert.match(await page.locator('#crumbs').innerText(), /My files\s*›\s*Finance\s*›\s*Ledgers/);

  // Back in the box, the results are there again; a click opens one.
  await page.click('#search-input');
  await searchShows(LEDGERS);
  await page.locator('#search-results li[data-path="/Finance/Archive/old ledger.txt"]').click();
  await page.waitForFunction(() => location.hash === '#/files/Finance/Archive');
  await page.locator('#preview[open]').waitFor();
  assert.equal(await page.locator('#preview-title').innerText(), 'old ledger.txt');
  await page.waitForFunction(() => document.querySelector('#preview-body pre')?.textContent === 'the old ledger\n');
  await page.keyboard.press('Escape');
  await page.locator('#preview[open]').waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => document.activeElement.dataset.path), '/Finance/Archive/old ledger.txt');

  await page.locator('#search-input').fill('');
  await page.locator('#crumbs a', { hasText: 'My files' }).click();
  await row('/Projects').waitFor();
});

test('phone width (375 px): the search box has a line of its own, its results fit, and a tap opens one', async () => {
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2, locale: 'en-US', timezoneId: 'UTC' });
  await phone.addCookies((await context.cookies()).map((c) => ({ ...c })));
  const p = await phone.newPage();
  try {
    await p.goto(BASE);
    await p.locator('#rows tr[data-path="/Projects"]').waitFor();
    const box = await p.locator('#search-input').boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= 375 && box.width > 300, `the box: ${JSON.stringify(box)}`);
    await p.locator('#search-input').tap();
    await p.keyboard.type('ledger');
    await searchShows(LEDGERS, p);
    const list = await p.locator('#search-panel').boundingBox();
    assert.ok(list.x >= 0 && list.x + list.width <= 375, `the results: ${JSON.stringify(list)}`);
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
    await p.locator('#search-results li[data-path="/Finance/Ledgers"]').tap();
    await p.waitForFunction(() => location.hash === '#/files/Finance/Ledgers');
    await p.locator('#rows tr[data-path="/Finance/Ledgers/inside.txt"]').waitFor();
  } finally {
    await phone.close();
  }
});

test('phone width (375 px): no horizontal overflow, actions reachable', async () => {
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2, locale: 'en-US', timezoneId: 'UTC' });
  await phone.addCookies((await context.cookies()).map((c) => ({ ...c })));
  const p = await phone.newPage();
  await p.goto(BASE);
  await p.locator('#rows tr[data-path="/Projects"]').waitFor();
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
  assert.ok(await p.locator('#btn-upload').isVisible());
  await p.locator('#usage:not([hidden])').waitFor();
  const usage = await p.locator('#usage').boundingBox();
  assert.ok(usage.x >= 0 && usage.x + usage.width <= 375, 'the storage used fits on the screen');
  await shot('phone', p);
  await p.locator('#rows tr[data-path="/video.mp4"] .more').click();
  await p.locator('#menu').waitFor();
  const box = await p.locator('#menu').boundingBox();
  assert.ok(box.x >= 0 && box.x + box.width <= 375, 'menu fits on the screen');
  await p.keyboard.press('Escape');
  await phone.close();
});

// ---------- shared folders ----------

const BOB_PASSWORD = `bob-${PASSWORD}`;

/// Adds a user the way an administrator does, with the command-line tool
/// on the server's data folder.
async function addUser(name, password) {
  const add = run(BIN, ['admin', 'user', 'add', name, '--password-stdin', '--data-dir', process.env.TESSERA_TEST_DATA], {
    env: { ...process.env, TESSERA_LOG: 'warn' },
  });
  add.child.stdin.end(`${password}\n`);
  await add;
}

/// Someone else, in a browser of their own, signed in through the form.
async function signInAs(name, password) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US', timezoneId: 'UTC' });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => console.error(`page error (${name}):`, e.message));
  await p.goto(BASE);
  await p.waitForSelector('#signin:not([hidden])');
  await p.fill('#signin-user', name);
  await p.fill('#signin-pass', password);
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#app:not([hidden])');
  return { ctx, p };
}

async function teamShare() {
  const res = await apiInPage('GET', '/shares');
  assert.equal(res.status, 200, res.text);
  return JSON.parse(res.text).shares.find((s) => s.path === '/Team');
}

const memberNames = (p) => p.locator('#share-members li[data-user]').evaluateAll((lis) => lis.map((li) => li.dataset.user));

test('share a folder: the owner shares it with a viewer, sees them listed, makes them an editor, removes them', async () => {
  await addUser('bob', BOB_PASSWORD);
  await page.evaluate(() => { location.hash = '#/files/'; });
  await row('/Projects').waitFor();
  await page.click('#btn-mkdir');
  await page.fill('#dialog-input', 'Team');
  await page.click('#dialog-ok');
  await row('/Team').waitFor();
  await row('/Team').locator('a').click();
  await page.waitForFunction(() => location.hash === '#/files/Team');
  await uploadThroughInput('plan.txt', 'the plan, shared\n');
  await row('/Team/plan.txt').waitFor();

  // Any folder of one's own is offered for sharing, not only those at the top.
  await page.evaluate(() => { location.hash = '#/files/Album'; });
  await row('/Album/raw').locator('.more').click();
  await page.locator('#menu:not([hidden])').waitFor();
  assert.equal(await page.locator('#menu [role=menuitem]', { hasText: 'Share folder…' }).count(), 1);
  await page.keyboard.press('Escape');
  await page.locator('#crumbs a', { hasText: 'My files' }).click();
  await row('/Team').waitFor();

  await menuAction('/Team', 'Share folder…');
  await page.locator('#share[open]').waitFor();
  assert.equal(await page.locator('#share-title').innerText(), 'Share “Team”');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'share-user', 'the username field has the focus');
  assert.deepEqual(await memberNames(page), ['admin']);

  // The server's refusal shows in the dialog, which stays open.
  await page.fill('#share-user', 'nobody-here');
  await page.click('#share-submit');
  await page.waitForFunction(() => /there is no user named nobody-here/.test(document.getElementById('share-error').textContent));
  assert.ok(await page.locator('#share-error').isVisible());

  await page.locator('#share').getByLabel('Username').fill('bob');
  await page.selectOption('#share-role', 'viewer');
  await page.getByRole('button', { name: 'Share', exact: true }).click();
  const bob = page.locator('#share-members li[data-user="bob"]');
  await bob.waitFor();
  assert.equal(await page.locator('#share-error').isVisible(), false, 'the earlier error is gone');
  assert.match(await page.locator('#share-status').innerText(), /Shared with bob as a viewer/);
  assert.deepEqual(await memberNames(page), ['admin', 'bob'], 'the owner first');
  assert.match(await page.locator('#share-members li[data-user="admin"]').innerText(), /admin \(you\)\s*Owner/);
  assert.equal(await bob.getByLabel('Role for bob').inputValue(), 'viewer');
  assert.ok(await page.locator('#share-unshare').isVisible());
  assert.equal(await page.locator('#share-leave').isVisible(), false);
  assert.deepEqual((await teamShare()).members, [{ username: 'admin', role: 'owner' }, { username: 'bob', role: 'viewer' }]);
  await row('/Team').locator('.badge.shared', { hasText: 'Shared · owner' }).waitFor();
  await shot('share-dialog');

  await bob.getByLabel('Role for bob').selectOption('editor');
  await page.waitForFunction(() => /bob is now an editor/.test(document.getElementById('share-status').textContent));
  assert.equal(await bob.getByLabel('Role for bob').inputValue(), 'editor');
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Role for bob', 'the select keeps the focus');
  assert.deepEqual((await teamShare()).members, [{ username: 'admin', role: 'owner' }, { username: 'bob', role: 'editor' }]);

  await bob.getByRole('button', { name: 'Remove bob' }).click();
  await bob.waitFor({ state: 'detached' });
  await page.locator('#share-members li', { hasText: 'No one else has access' }).waitFor();
  assert.match(await page.locator('#share-status').innerText(), /bob no longer has access/);
  assert.deepEqual((await teamShare()).members, [{ username: 'admin', role: 'owner' }]);
  assert.equal(await page.locator('#share-unshare').isVisible(), false, 'nothing left to unshare');
  // Shared with no one now: the badge goes.
  await row('/Team').locator('.badge.shared').waitFor({ state: 'detached' });

  await page.keyboard.press('Escape');
  await page.locator('#share[open]').waitFor({ state: 'detached' });
  // The list may re-render as the change arrives: the focus follows the row.
  await page.waitForFunction(() => document.activeElement?.dataset?.path === '/Team', null, { timeout: 5000 })
    .catch(() => {});
  assert.equal(await page.evaluate(() => document.activeElement.dataset.path), '/Team', 'the focus is back on the folder');
});

test('a folder shared as a viewer: the member finds it at the top with its badge, opens a file, has no upload there; as an editor they do; they leave', async () => {
  const made = await apiInPage('POST', '/shares', { path: '/Team', with: 'bob', role: 'viewer' });
  assert.equal(made.status, 201, made.text);
  const { id } = JSON.parse(made.text);
  const { ctx, p } = await signInAs('bob', BOB_PASSWORD);
  try {
    const team = p.locator('#rows tr[data-path="/Team"]');
    await team.waitFor();
    assert.equal(await p.locator('#rows tr').first().getAttribute('data-path'), '/Team');
    assert.equal(await team.locator('.badge.shared').innerText(), 'Shared · viewer');

    await team.locator('a').click();
    await p.waitForFunction(() => location.hash === '#/files/Team');
    const plan = p.locator('#rows tr[data-path="/Team/plan.txt"]');
    await plan.waitFor();
    await p.locator('#readonly-note:not([hidden])').waitFor();
    assert.match(await p.locator('#readonly-note').innerText(), /shared with you by admin as a viewer, so it is read-only/);
    for (const control of ['#btn-upload', '#btn-upload-folder', '#btn-mkdir']) {
      assert.equal(await p.locator(control).isVisible(), false, `${control} is offered in a viewer's folder`);
    }
    await plan.locator('a').click();
    await p.waitForFunction(() => document.querySelector('#preview-body pre')?.textContent === 'the plan, shared\n');
    await p.click('#preview-close');
    await plan.locator('.more').click();
    await p.locator('#menu:not([hidden])').waitFor();
    const items = await p.locator('#menu [role=menuitem]').allInnerTexts();
    assert.deepEqual(items.filter((t) => /Rename|Move|Delete/.test(t)), [], `menu: ${items}`);
    await p.keyboard.press('Escape');
    await p.evaluate(() => { document.getElementById('toast').hidden = true; });
    await shot('shared-viewer', p);
    // The server refuses a viewer's write anyway.
    const mkdir = await p.evaluate(async () => (await fetch('/api/v1/files/mkdir', {
      method: 'POST', headers: { 'X-Tessera-Web': '1', 'Content-Type': 'application/json' }, body: JSON.stringify({ path: '/Team/sneaky' }),
    })).status);
    assert.equal(mkdir, 403);

    // Made an editor: the member's page follows without a reload.
    const changed = await apiInPage('PUT', `/shares/${id}/members/bob`, { role: 'editor' });
    assert.equal(changed.status, 200, changed.text);
    await p.locator('#btn-upload').waitFor({ state: 'visible', timeout: 5000 });
    assert.ok(await p.locator('#btn-mkdir').isVisible());
    assert.equal(await p.locator('#readonly-note').isVisible(), false);

    // The member's dialog: who has it, the owner first, and Leave.
    await p.locator('#crumbs a', { hasText: 'My files' }).click();
    await team.locator('.badge.shared', { hasText: 'Shared · editor' }).waitFor();
    await team.locator('.more').click();
    await p.locator('#menu [role=menuitem]', { hasText: 'Who has access…' }).click();
    await p.locator('#share[open]').waitFor();
    await p.locator('#share-members li[data-user="bob"]').waitFor();
    assert.equal(await p.locator('#share-title').innerText(), '“Team” is shared with you');
    assert.equal(await p.locator('#share-form').isVisible(), false, 'a member shares nothing');
    assert.deepEqual(await memberNames(p), ['admin', 'bob']);
    assert.match(await p.locator('#share-members li[data-user="admin"]').innerText(), /Owner/);
    assert.match(await p.locator('#share-members li[data-user="bob"]').innerText(), /bob \(you\)\s*Editor/);
    assert.equal(await p.locator('#share-members select').count(), 0);
    assert.equal(await p.locator('#share-unshare').isVisible(), false);
    assert.equal(await p.evaluate(() => document.activeElement.id), 'share-leave');
    await p.click('#share-leave');
    await p.locator('#dialog[open]').waitFor();
    await p.click('#dialog-ok');
    await team.waitFor({ state: 'detached' });
    await p.locator('#share[open]').waitFor({ state: 'detached' });
    assert.deepEqual((await teamShare()).members, [{ username: 'admin', role: 'owner' }]);
  } finally {
    await ctx.close();
  }
});

test('phone width (375 px): the share dialog fits and works', async () => {
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2, locale: 'en-US', timezoneId: 'UTC' });
  await phone.addCookies((await context.cookies()).map((c) => ({ ...c })));
  const p = await phone.newPage();
  try {
    await p.goto(BASE);
    const team = p.locator('#rows tr[data-path="/Team"]');
    await team.waitFor();
    await team.locator('.more').click();
    await p.locator('#menu [role=menuitem]', { hasText: 'Share folder…' }).click();
    await p.locator('#share[open]').waitFor();
    await p.locator('#share').getByLabel('Username').fill('bob');
    await p.selectOption('#share-role', 'viewer');
    await p.getByRole('button', { name: 'Share', exact: true }).tap();
    const bob = p.locator('#share-members li[data-user="bob"]');
    await bob.waitFor();
    const controls = ['#share', '#share-user', '#share-role', '#share-submit', '#share-members li[data-user="bob"] select',
      '#share-members li[data-user="bob"] button', '#share-unshare', '#share-done', '#share-close'];
    for (const sel of controls) {
      const box = await p.locator(sel).boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= 375 && box.width > 0, `${sel} is off the screen: ${JSON.stringify(box)}`);
      if (sel !== '#share') assert.ok(box.height >= 30, `${sel} is too small to tap: ${box.height}px`);
    }
    assert.ok(await p.locator('#share').evaluate((d) => d.scrollWidth <= d.clientWidth), 'the dialog scrolls sideways');
    await shot('share-dialog-phone', p);
    await bob.getByLabel('Role for bob').selectOption('editor');
    await p.waitForFunction(() => /bob is now an editor/.test(document.getElementById('share-status').textContent));

    // Unshare: everyone else loses it, after a question.
    await p.locator('#share-unshare').tap();
    await p.locator('#dialog[open]').waitFor();
    await p.click('#dialog-ok');
    await bob.waitFor({ state: 'detached' });
    assert.match(await p.locator('#share-status').innerText(), /only you have access/);
    assert.deepEqual((await teamShare()).members, [{ username: 'admin', role: 'owner' }]);
    await p.locator('#share-done').tap();
    await p.locator('#share[open]').waitFor({ state: 'detached' });
  } finally {
    await phone.close();
  }
});

// ---------- account and users ----------

/// Signs in through the API as a program does (a bearer token, no cookie):
/// another device of that user's.
async function apiLogin(username, password, device) {
  const res = await fetch(`${BASE}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password, device }),
  });
  const text = await res.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body, text };
}

/// The status a device's token gets for a request.
async function asDevice(token, path) {
  return (await fetch(`${BASE}/api/v1${path}`, { headers: { Authorization: `Bearer ${token}` } })).status;
}

/// Opens the account page from the top bar, afresh (its lists load then).
async function openAccount(p = page) {
  await p.evaluate(() => { location.hash = '#/files/'; });
  await p.locator('#files-view:not([hidden])').waitFor();
  await p.click('#nav-account');
  await p.locator('#account-view:not([hidden])').waitFor();
  await p.locator('#device-rows tr.current').waitFor();
}

test('the account page is in the top bar and shows the storage used', async () => {
  await openAccount();
  assert.equal(await page.evaluate(() => location.hash), '#/account');
  assert.equal(await page.locator('#nav-account').getAttribute('aria-current'), 'page');
  assert.equal(await page.locator('#files-view').isVisible(), false, 'the file list is not shown with it');
  const usage = await usageNow();
  assert.equal(usage.quota_bytes, null);
  const expected = `${await sizeInPage(usage.used_bytes)} used, no quota`;
  await page.waitForFunction((t) => document.getElementById('account-usage-text').textContent === t, expected);
  assert.equal(await page.locator('#account-usage-bar').isVisible(), false, 'no bar without a quota');
  assert.match(await page.locator('#account-who').innerText(), /Signed in as admin/);
  // The figure in the top bar, on every page, leads here too.
  await page.click('#nav-files');
  await row('/Projects').waitFor();
  assert.ok(await page.locator('#usage').isVisible());
  await page.click('#usage');
  await page.locator('#account-view:not([hidden])').waitFor();
  await page.click('#nav-files');
  await row('/Projects').waitFor();
});

test('devices: this browser is marked, another sign-in is listed, and signing it out ends its session', async () => {
  const other = await apiLogin('admin', PASSWORD, 'test phone');
  assert.equal(other.status, 200, other.text);
  const token = other.body.token;
  assert.equal(await asDevice(token, '/usage'), 200);
  await openAccount();
  const current = page.locator('#device-rows tr.current');
  assert.equal(await current.count(), 1);
  assert.match(await current.innerText(), /this browser/);
  assert.equal(await current.getByRole('button').count(), 0, 'this browser signs out from the top bar');
  const phone = page.locator('#device-rows tr', { hasText: 'test phone' });
  await phone.waitFor();
  assert.doesNotMatch(await phone.innerText(), /this browser/);
  const id = await phone.getAttribute('data-device');
  const listed = JSON.parse((await apiInPage('GET', '/devices')).text).devices;
  assert.equal(await page.locator('#device-rows tr').count(), listed.length, 'every device is listed');
  assert.ok(listed.some((d) => d.id === id && d.name === 'test phone' && !d.current), JSON.stringify(listed));
  assert.equal(await page.locator('#device-rows tr').first().getAttribute('class'), 'current', 'this browser comes first');

  // Asked first: cancelling keeps it signed in.
  await phone.getByRole('button', { name: 'Sign out test phone' }).click();
  await page.locator('#dialog[open]').waitFor();
  assert.match(await page.locator('#dialog-title').innerText(), /Sign out “test phone”/);
  await page.click('#dialog-cancel');
  assert.equal(await asDevice(token, '/usage'), 200);

  await phone.getByRole('button', { name: 'Sign out test phone' }).click();
  await page.locator('#dialog[open]').waitFor();
  await page.click('#dialog-ok');
  await page.locator(`#device-rows tr[data-device="${id}"]`).waitFor({ state: 'detached' });
  assert.match(await page.locator('#devices-status').innerText(), /“test phone” is signed out/);
  assert.equal(await asDevice(token, '/usage'), 401, 'its token is refused');
  assert.equal(await current.count(), 1);
  assert.equal((await apiInPage('GET', '/usage')).status, 200, 'this browser is still signed in');
});

const DANA = `dana-${PASSWORD}`;

test('change the password on the account page: a wrong current one changes nothing, the right one signs out the other devices, and the new one signs in', async () => {
  const made = await apiInPage('POST', '/admin/users', { name: 'dana', password: DANA, admin: false });
  assert.equal(made.status, 201, made.text);
  const quota = await apiInPage('PUT', '/admin/users/dana/quota', { quota_bytes: 50 * 2 ** 30 });
  assert.equal(quota.status, 200, quota.text);
  const laptop = await apiLogin('dana', DANA, 'dana laptop');
  assert.equal(laptop.status, 200, laptop.text);
  const { ctx, p } = await signInAs('dana', DANA);
  try {
    await openAccount(p);
    // With a quota: the share of it, and a bar.
    await p.waitForFunction(() => / of 50 GiB used$/.test(document.getElementById('account-usage-text').textContent));
    assert.ok(await p.locator('#account-usage-bar').isVisible(), 'a bar with a quota');
    assert.match(await p.locator('#account-usage-hint').innerText(), /left/);
    assert.equal(await p.locator('#device-rows tr', { hasText: 'dana laptop' }).count(), 1);

    const form = p.locator('#password-form');
    const fill = async (current, next, again) => {
      await form.getByLabel('Current password').fill(current);
      await form.getByLabel('New password', { exact: true }).fill(next);
      await form.getByLabel('New password again').fill(again);
    };
    const submit = () => form.getByRole('button', { name: 'Change password' }).click();
    const errorSays = (re) => p.waitForFunction((s) => new RegExp(s).test(document.getElementById('pw-error').textContent), re.source);

    await fill('not my password', 'brand new secret', 'brand new secret');
    await submit();
    await errorSays(/current password is wrong/);
    assert.equal(await p.evaluate(() => document.activeElement.id), 'pw-current');
    assert.equal(await asDevice(laptop.body.token, '/usage'), 200, 'nothing was changed: the laptop is still in');
    assert.equal((await apiLogin('dana', 'brand new secret', 'check')).status, 401);

    // Typed twice differently: caught before asking the server.
    await fill(DANA, 'brand new secret', 'brand new secreT');
    await submit();
    await errorSays(/do not match/);
    assert.equal(await p.evaluate(() => document.activeElement.id), 'pw-again');
    // Too short: the server says how long.
    await fill(DANA, 'short', 'short');
    await submit();
    await errorSays(/at least 8 characters/);
    assert.equal(await asDevice(laptop.body.token, '/usage'), 200);

    await fill(DANA, 'brand new secret', 'brand new secret');
    await submit();
    await p.waitForFunction(() => document.getElementById('pw-status').textContent === 'Password changed; 1 other device was signed out.');
    assert.equal(await p.locator('#pw-error').isVisible(), false);
    assert.equal(await form.getByLabel('Current password').inputValue(), '', 'the form is cleared');
    assert.equal(await asDevice(laptop.body.token, '/usage'), 401, 'the other device is signed out');
    await p.locator('#device-rows tr', { hasText: 'dana laptop' }).waitFor({ state: 'detached' });
    assert.equal(await p.locator('#device-rows tr').count(), 1, 'only this browser is left');
    assert.equal((await p.evaluate(async () => (await fetch('/api/v1/usage')).status)), 200, 'this browser is still in');
    assert.equal((await apiLogin('dana', DANA, 'check')).status, 401, 'the old password is refused');
    assert.equal((await apiLogin('dana', 'brand new secret', 'check')).status, 200, 'the new one signs in');

    // Once more, signing out this browser too: back to sign-in.
    await fill('brand new secret', 'newer secret, too', 'newer secret, too');
    await form.getByLabel('Also sign out this browser').check();
    await submit();
    await p.waitForSelector('#signin:not([hidden])');
    assert.match(await p.locator('#signin-error').innerText(), /password is changed/);
    assert.equal((await ctx.cookies()).some((c) => c.name === 'tessera_session'), false, 'the session cookie is gone');
    assert.equal(await p.locator('#signin-user').inputValue(), 'dana');
    await p.fill('#signin-pass', 'newer secret, too');
    await p.click('#signin-form button[type=submit]');
    await p.waitForSelector('#app:not([hidden])');
    await p.locator('#account-view:not([hidden])').waitFor();
    await p.locator('#device-rows tr.current').waitFor();
  } finally {
    await ctx.close();
  }
});

const ERIN = `erin-${PASSWORD}`;

test('users, for administrators: add one, disable it (its sign-in says so), enable, delete and restore it; a non-administrator has no Users', async () => {
  await page.evaluate(() => { location.hash = '#/files/'; });
  await page.locator('#nav-users:not([hidden])').waitFor();
  await page.click('#nav-users');
  await page.locator('#users-view:not([hidden])').waitFor();
  const me = page.locator('#user-rows tr[data-user="admin"]');
  await me.waitFor();
  assert.match(await me.innerText(), /\(you\)/);
  const listed = JSON.parse((await apiInPage('GET', '/admin/users')).text).users.map((u) => u.name).sort();
  assert.deepEqual((await page.locator('#user-rows tr').evaluateAll((rows) => rows.map((r) => r.dataset.user))).sort(), listed);

  const form = page.locator('#user-form');
  const add = async (name, password) => {
    await form.getByLabel('Name').fill(name);
    await form.getByLabel('Password').fill(password);
    await form.getByRole('button', { name: 'Add user' }).click();
  };
  const formSays = (re) => page.waitForFunction((s) => new RegExp(s).test(document.getElementById('user-form-error').textContent), re.source);
  await add('bob', 'another password');
  await formSays(/User bob already exists\./);
  await add('erin', 'short');
  await formSays(/at least 8 characters/);
  await add('erin', ERIN);
  const erin = page.locator('#user-rows tr[data-user="erin"]');
  await erin.waitFor();
  assert.equal(await erin.getAttribute('data-state'), 'active');
  assert.match(await page.locator('#users-status').innerText(), /erin is added/);
  assert.equal(await page.locator('#user-form-error').isVisible(), false);
  assert.equal(await form.getByLabel('Name').inputValue(), '', 'the form is cleared');

  const act = async (user, label) => {
    await page.locator(`#user-rows tr[data-user="${user}"] .more`).click();
    await page.getByRole('menuitem', { name: label, exact: true }).click();
  };
  const inState = (user, s) => page.locator(`#user-rows tr[data-user="${user}"][data-state="${s}"]`).waitFor();

  // On oneself: the server's refusal, in its words.
  await act('admin', 'Disable');
  await page.click('#dialog-ok');
  await page.waitForFunction(() => /cannot disable the account you are signed in as/.test(document.getElementById('users-error').textContent));
  assert.equal(await me.getAttribute('data-state'), 'active');

  await act('erin', 'Disable');
  await page.locator('#dialog[open]').waitFor();
  assert.match(await page.locator('#dialog-text').innerText(), /cannot sign in until the account is enabled/);
  await page.click('#dialog-ok');
  await inState('erin', 'disabled');
  assert.match(await page.locator('#users-status').innerText(), /erin is disabled/);
  assert.equal(await page.locator('#users-error').isVisible(), false, 'the earlier refusal is gone');
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Actions for erin', 'the focus is back on the row');

  // Erin's own browser: the sign-in is refused, saying why.
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US', timezoneId: 'UTC' });
  const p = await ctx.newPage();
  try {
    await p.goto(BASE);
    await p.waitForSelector('#signin:not([hidden])');
    await p.fill('#signin-user', 'erin');
    await p.fill('#signin-pass', ERIN);
    await p.click('#signin-form button[type=submit]');
    await p.waitForFunction(() => /^The account erin is disabled/.test(document.getElementById('signin-error').textContent));
    assert.equal(await p.locator('#app').isVisible(), false);

    await act('erin', 'Enable');
    await inState('erin', 'active');
    assert.match(await page.locator('#users-status').innerText(), /erin is enabled/);

    // Signed in, erin is no administrator: no Users entry, and the page refuses.
    const checked = p.waitForResponse((r) => r.url().endsWith('/api/v1/admin/users'));
    await p.click('#signin-form button[type=submit]');
    await p.waitForSelector('#app:not([hidden])');
    assert.equal((await checked).status(), 403);
    assert.equal(await p.locator('#nav-users').isVisible(), false);
    assert.ok(await p.locator('#nav-account').isVisible());
    await p.evaluate(() => { location.hash = '#/users'; });
    await p.waitForFunction(() => /erin is not an administrator/.test(document.getElementById('users-error').textContent));
    assert.equal(await p.locator('#add-user').isVisible(), false);
    assert.equal(await p.locator('#user-rows tr').count(), 0);

    await act('erin', 'Delete');
    await page.locator('#dialog[open]').waitFor();
    const asked = await page.locator('#dialog-text').innerText();
    assert.match(asked, /can no longer sign in/);
    assert.match(asked, /kept until the purge date/);
    assert.match(asked, /restored until then/);
    await page.click('#dialog-ok');
    await inState('erin', 'deleted');
    assert.match(await erin.innerText(), /Deleted\s*restorable until/);
    assert.match(await page.locator('#users-status').innerText(), /erin is deleted\. Their files are kept until/);
    assert.equal(await p.evaluate(async () => (await fetch('/api/v1/usage')).status), 401, "erin's browser is signed out");
    await erin.locator('.more').click();
    assert.deepEqual(await page.locator('#menu [role=menuitem]').allInnerTexts(), ['Restore']);
    await page.getByRole('menuitem', { name: 'Restore', exact: true }).click();
    await inState('erin', 'active');
    assert.match(await page.locator('#users-status').innerText(), /erin is restored/);
    const back = await apiLogin('erin', ERIN, 'erin phone');
    assert.equal(back.status, 200, back.text);

    // A new password, set by the administrator: erin's devices are signed out.
    await act('erin', 'Reset password…');
    await page.locator('#dialog[open]').waitFor();
    assert.equal(await page.locator('#dialog-input').getAttribute('type'), 'password');
    await page.fill('#dialog-input', 'erin gets a new one');
    await page.click('#dialog-ok');
    await page.waitForFunction(() => /erin's password is set; 1 device was signed out/.test(document.getElementById('users-status').textContent));
    assert.equal(await asDevice(back.body.token, '/usage'), 401);
    assert.equal((await apiLogin('erin', 'erin gets a new one', 'erin phone')).status, 200);

    // A quota: a size with its unit.
    await act('erin', 'Set quota…');
    await page.fill('#dialog-input', 'lots');
    await page.click('#dialog-ok');
    await page.waitForFunction(() => /such as 50 GiB/.test(document.getElementById('dialog-error').textContent));
    await page.fill('#dialog-input', '2 GiB');
    await page.click('#dialog-ok');
    await erin.locator('td', { hasText: 'of 2 GiB' }).waitFor();
    const q = JSON.parse((await apiInPage('GET', '/admin/users/erin/quota')).text);
    assert.equal(q.quota_bytes, 2 * 2 ** 30);
  } finally {
    await ctx.close();
  }
  await page.click('#nav-files');
  await row('/Projects').waitFor();
});

test('a file over the size limit is refused with a clear message', async () => {
  // Made in the page (a drop), so no 32 MiB travel to the browser.
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File([new ArrayBuffer((32 << 20) + 1)], 'too big.iso'));
    return dt;
  });
  await page.dispatchEvent('#drop', 'drop', { dataTransfer });
  const item = page.locator('#up-list li.failed[data-path="/too big.iso"]');
  await item.waitFor();
  assert.match(await item.locator('.stat').innerText(), /Too large.*32 MiB/);
  await page.click('#up-clear');
  assert.equal(await row('/too big.iso').count(), 0);
});

test('an expired session goes back to sign-in with a message, and signing in again resumes', async () => {
  const token = (await context.cookies()).find((c) => c.name === 'tessera_session').value;
  // The session ends elsewhere (here: its token is revoked).
  const res = await fetch(`${BASE}/api/v1/auth/logout`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
  assert.equal(res.status, 204);
  await page.click('#nav-trash');
  await page.waitForSelector('#signin:not([hidden])');
  assert.match(await page.locator('#signin-error').innerText(), /session has ended/);
  await page.fill('#signin-pass', PASSWORD);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await page.click('#nav-files');
  await row('/Projects').waitFor();
});

/// Stops the server (SIGTERM: a graceful shutdown) and starts it again on
/// the same port and data.
async function restartServer() {
  const pidFile = process.env.TESSERA_TEST_PIDFILE;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  process.kill(pid, 'SIGTERM');
  const alive = () => { try { process.kill(pid, 0); return true; } catch { return false; } };
  for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(alive(), false, 'the server stopped');
  const log = openSync(process.env.TESSERA_TEST_LOG, 'a');
  const child = spawn(BIN, ['serve', '--data-dir', process.env.TESSERA_TEST_DATA, '--listen', `127.0.0.1:${process.env.TESSERA_TEST_PORT}`], {
    stdio: ['ignore', log, log],
    env: { ...process.env, TESSERA_LOG: 'warn', TESSERA_MAX_FILE_SIZE: String(32 << 20) },
  });
  child.unref();
  writeFileSync(pidFile, String(child.pid));
  for (let i = 0; i < 100; i++) {
    try { if ((await fetch(`${BASE}/healthz`)).ok) return; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail('the server did not come back');
}

test('a server restart: live updates obey the backoff hint and reconnect, an upload under way completes', async () => {
  await page.locator('#live.on').waitFor();
  const file = localFile('across-restart.bin', 20 << 20, 41);
  const net = await throttle(4e6);
  const polls = [];
  const count = (r) => { if (r.url().includes('/api/v1/changes/poll')) polls.push(Date.now()); };
  page.on('request', count);
  let stopped;
  try {
    await page.setInputFiles('#pick-files', file.path);
    await page.waitForFunction(() => document.querySelector('#up-list li[data-path="/across-restart.bin"] progress')?.value > 0.1, null, { timeout: 20_000 });
    stopped = Date.now();
    await restartServer();
    await page.locator('#live.off').waitFor({ state: 'attached', timeout: 5000 });
  } finally {
    await net.off();
  }
  await page.locator('#live.on').waitFor({ state: 'attached', timeout: 30_000 });
  await page.locator('#up-list li.done[data-path="/across-restart.bin"]').waitFor({ state: 'attached', timeout: 60_000 });
  assert.equal(await serverSha('/across-restart.bin'), file.sha);
  page.off('request', count);
  const during = polls.filter((t) => t >= stopped);
  // The shutdown answer asks for 5 s of quiet: no burst of retries.
  assert.ok(during.length <= 3, `polls while restarting: ${during.length}`);
  const dir = mkdtempSync(join(tmpdir(), 'tessera-web-'));
  writeFileSync(join(dir, 'after-restart.txt'), 'still live\n');
  const env = { ...process.env, TESSERA_CONFIG_DIR: CLI_HOME, TESSERA_SERVER: BASE };
  await run(BIN, ['put', join(dir, 'after-restart.txt'), '/after-restart.txt'], { env });
  await row('/after-restart.txt').waitFor({ timeout: 2000 });
});

test('sign out: back to sign-in, and the session no longer works', async () => {
  await page.click('#signout');
  await page.waitForSelector('#signin:not([hidden])');
  const res = await page.evaluate(async () => (await fetch('/api/v1/files/list?path=/')).status);
  assert.equal(res, 401);
});

test('nothing was fetched from anywhere but the server', () => {
  assert.deepEqual(external, []);
});
