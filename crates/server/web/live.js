// Live updates through the long poll the sync clients use: hold
// /changes/poll, read /changes when it says something moved, obey the
// server's backoff hint and Retry-After, and after other failures wait an
// exponentially growing, fully jittered time so that a restarted server is
// not met by everyone at once.

import { ApiError, api } from './api.js';

const POLL_SECS = 55;
const MAX_WAIT_MS = 60_000;

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

export class Live {
  /// `onChanges(changes)` gets each batch of journal entries;
  /// `onState('on' | 'off')` shows whether the connection holds.
  constructor(onChanges, onState) {
    this.onChanges = onChanges;
    this.onState = onState;
    this.controller = null;
  }

  start() {
    this.stop();
    this.controller = new AbortController();
    this.loop(this.controller.signal);
  }

  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async loop(signal) {
    let cursor = null;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (cursor === null) {
          cursor = (await api('GET', '/changes/latest', { signal })).cursor;
          // Whatever happened while we were away: the view reloads once.
          if (failures > 0) this.onChanges([]);
        }
        this.onState('on');
        const r = await api('GET', '/changes/poll', { query: { cursor, timeout: POLL_SECS }, signal });
        failures = 0;
        if (r.changes) {
          let more = true;
          while (more && !signal.aborted) {
            const page = await api('GET', '/changes', { query: { cursor, limit: 1000 }, signal });
            cursor = page.cursor;
            more = page.has_more;
            this.onChanges(page.changes);
          }
        }
        if (r.backoff) {
          this.onState('off');
          await sleep(r.backoff * 1000 * (1 + Math.random()), signal);
        }
      } catch (e) {
        if (signal.aborted || e.name === 'AbortError') return;
        if (e instanceof ApiError && e.status === 401) return;
        // A cursor the server refuses (say, after a restore from backup):
        // start again from the present.
        if (e instanceof ApiError && e.status === 400) cursor = null;
        this.onState('off');
        failures += 1;
        // A server that says when to come back (too many clients arriving
        // at once, a failover) has spread its answers: obey it.
        const told = e instanceof ApiError && e.retryAfter !== null && e.retryAfter !== undefined
          ? e.retryAfter * 1000 + Math.random() * 1000
          : null;
        await sleep(told ?? Math.random() * Math.min(MAX_WAIT_MS, 1000 * 2 ** failures), signal);
      }
    }
  }
}
