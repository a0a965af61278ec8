// tus-js-client, unchanged, against a real Tessera server: an upload in
// chunks, a resume after an abort that continues where the server says,
// and the errors a client sees for someone else's upload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Upload, FileUrlStorage } from 'tus-js-client';

const URL_BASE = process.env.TESSERA_URL;
const PASSWORD = process.env.TESSERA_TEST_PASSWORD;
const ENDPOINT = `${URL_BASE}/api/v1/tus/`;
const MiB = 1 << 20;

async function login(device, username = 'admin', password = PASSWORD) {
  const r = await fetch(`${URL_BASE}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password, device }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).token;
}

async function download(token, path) {
  const r = await fetch(`${URL_BASE}/api/v1/files/content?path=${encodeURIComponent(path)}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(r.status, 200, `GET ${path}`);
  return Buffer.from(await r.arrayBuffer());
}

function run(upload) {
  return new Promise((resolve, reject) => {
    upload.options.onSuccess = () => resolve(upload);
    upload.options.onError = reject;
    upload.start();
  });
}

test('uploads a file in chunks and it lands at folder/filename', async () => {
  const token = await login('node-a');
  const data = randomBytes(20 * MiB);
  let progressed = 0;
  const upload = new Upload(data, {
    endpoint: ENDPOINT,
    chunkSize: 4 * MiB,
    retryDelays: [],
    headers: { Authorization: `Bearer ${token}` },
    metadata: { filename: 'tus-js.bin', folder: '/node' },
    onProgress: (sent) => { progressed = sent; },
  });
  await run(upload);
  assert.equal(progressed, data.length);
  assert.match(upload.url, /\/api\/v1\/tus\/[0-9a-f]{32}$/);
  assert.ok((await download(token, '/node/tus-js.bin')).equals(data));
});

test('an aborted upload resumes from the offset the server kept', async () => {
  const token = await login('node-b');
  const data = randomBytes(16 * MiB);
  const storage = new FileUrlStorage(join(mkdtempSync(join(tmpdir(), 'tus-')), 'urls.json'));
  const options = {
    endpoint: ENDPOINT,
    chunkSize: 2 * MiB,
    retryDelays: [],
    headers: { Authorization: `Bearer ${token}` },
    metadata: { path: '/node/resumed.bin' },
    urlStorage: storage,
    fingerprint: async () => 'tessera-resume-test',
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
  };
  // First attempt: stop after 6 MiB have been acknowledged.
  const first = new Upload(data, { ...options });
  await new Promise((resolve, reject) => {
    first.options.onChunkComplete = (_chunk, accepted) => {
      if (accepted >= 6 * MiB) first.abort().then(resolve, reject);
    };
    first.options.onError = reject;
    first.options.onSuccess = () => reject(new Error('finished before the abort'));
    first.start();
  });
  // The file shows as syncing meanwhile.
  const list = await fetch(`${URL_BASE}/api/v1/files/list?path=/node`, {
    headers: { Authorization: `Bearer ${token}` },
  }).then((r) => r.json());
  assert.ok(list.entries.some((e) => e.name === 'resumed.bin' && e.pending), JSON.stringify(list));

  // Second attempt, as after a reload: find the stored upload and go on.
  const second = new Upload(data, { ...options });
  const previous = await second.findPreviousUploads();
  assert.equal(previous.length, 1);
  second.resumeFromPreviousUpload(previous[0]);
  let firstReport = null;
  second.options.onProgress = (sent) => { if (firstReport === null) firstReport = sent; };
  await run(second);
  assert.equal(second.url, first.url, 'the same upload continued');
  assert.ok(firstReport >= 6 * MiB, `resumed at ${firstReport}, not from the start`);
  assert.ok((await download(token, '/node/resumed.bin')).equals(data));
});

test("another user's upload URL is not found; no credentials are refused", async () => {
  const token = await login('node-c');
  const data = randomBytes(3 * MiB);
  const started = new Upload(data, {
    endpoint: ENDPOINT,
    chunkSize: MiB,
    retryDelays: [],
    headers: { Authorization: `Bearer ${token}` },
    metadata: { path: '/node/private.bin' },
  });
  await new Promise((resolve, reject) => {
    started.options.onChunkComplete = () => started.abort().then(resolve, reject);
    started.options.onError = reject;
    started.start();
  });
  const status = async (headers) => {
    const other = new Upload(data, { endpoint: ENDPOINT, uploadUrl: started.url, retryDelays: [], headers });
    try {
      await run(other);
      return 'succeeded';
    } catch (err) {
      return err.originalResponse?.getStatus();
    }
  };
  // To another user the URL names nothing (tus-js-client then tries to
  // create a new upload, which without metadata is a clear 400).
  const bob = await login('node-bob', 'bob', process.env.TESSERA_TEST_BOB_PASSWORD);
  const head = await fetch(started.url, {
    method: 'HEAD',
    headers: { Authorization: `Bearer ${bob}`, 'Tus-Resumable': '1.0.0' },
  });
  assert.equal(head.status, 404);
  assert.equal(await status({ Authorization: `Bearer ${bob}` }), 400);
  assert.equal(await status({}), 401);
  // The owner can still finish it.
  const owner = new Upload(data, { endpoint: ENDPOINT, uploadUrl: started.url, retryDelays: [], headers: { Authorization: `Bearer ${token}` } });
  await run(owner);
  assert.ok((await download(token, '/node/private.bin')).equals(data));
});
