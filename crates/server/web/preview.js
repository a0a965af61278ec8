// Previews: images, PDFs, audio and video straight from the view route
// (which types them, and sandboxes anything that could hold script); text
// and code fetched (the first 512 KiB) and shown as text, never as markup.

import { WEB_HEADERS, errorFrom, files, formatBytes } from './api.js';

const $ = (id) => document.getElementById(id);
const TEXT_BYTES = 512 << 10;

const KINDS = {
  image: ['png', 'jpg', 'jpeg', 'gif', 'webp', 'avif', 'bmp', 'ico', 'svg'],
  pdf: ['pdf'],
  audio: ['mp3', 'm4a', 'aac', 'ogg', 'oga', 'opus', 'wav', 'flac', 'weba'],
  video: ['mp4', 'm4v', 'webm', 'ogv', 'mov'],
  text: ['txt', 'md', 'markdown', 'csv', 'tsv', 'log', 'json', 'jsonl', 'xml', 'yaml', 'yml', 'toml', 'ini', 'cfg', 'conf', 'env',
    'rs', 'go', 'py', 'rb', 'js', 'mjs', 'cjs', 'ts', 'tsx', 'jsx', 'java', 'kt', 'c', 'h', 'cc', 'cpp', 'hpp', 'cs', 'swift', 'php',
    'sh', 'bash', 'zsh', 'fish', 'ps1', 'sql', 'html', 'htm', 'css', 'scss', 'less', 'vue', 'svelte', 'lua', 'pl', 'r', 'tex',
    'diff', 'patch', 'gitignore', 'dockerfile', 'makefile', 'srt', 'vtt'],
};

export function kindOf(name) {
  const ext = name.includes('.') ? name.split('.').pop().toLowerCase() : '';
  for (const [kind, exts] of Object.entries(KINDS)) if (exts.includes(ext)) return kind;
  return null;
}

let list = [];
let index = 0;
let textAbort = null;

export async function openPreview(entry, siblings) {
  list = siblings.length ? siblings : [entry];
  index = Math.max(0, list.findIndex((e) => e.path === entry.path));
  if (entry.pending && !entry.rev) {
    // The listing may be older than the upload's end: ask once more.
    try { list[index] = await files.meta(entry.path); } catch { /* shown as uploading */ }
  }
  show();
  const d = $('preview');
  if (!d.open) d.showModal();
  $('preview-close').focus();
}

function show() {
  const entry = list[index];
  if (textAbort) textAbort.abort();
  $('preview-title').textContent = entry.name;
  $('preview-download').href = files.downloadUrl(entry.path);
  $('preview-download').setAttribute('download', '');
  const body = $('preview-body');
  // The current content, not the revision this listing saw: the list may
  // be a moment behind (an upload finishing as it is clicked).
  const src = files.viewUrl(entry.path);
  const kind = entry.pending && !entry.rev ? 'uploading' : kindOf(entry.name);
  let node;
  switch (kind) {
    case 'image':
      node = document.createElement('img');
      node.alt = entry.name;
      node.src = src;
      break;
    case 'pdf':
      node = document.createElement('iframe');
      node.title = entry.name;
      node.src = src;
      break;
    case 'audio':
    case 'video':
      node = document.createElement(kind);
      node.controls = true;
      node.preload = 'metadata';
      node.src = src;
      break;
    case 'text': {
      node = document.createElement('pre');
      node.tabIndex = 0;
      node.textContent = 'Loading…';
      textAbort = new AbortController();
      loadText(src, entry, node, textAbort.signal);
      break;
    }
    case 'uploading':
      node = document.createElement('div');
      node.className = 'none';
      node.textContent = 'This file is still being uploaded. It can be previewed once the upload completes.';
      break;
    default: {
      node = document.createElement('div');
      node.className = 'none';
      node.textContent = `No preview for this kind of file (${formatBytes(entry.size)}). Use Download to open it on your device.`;
    }
  }
  body.replaceChildren(node);
}

async function loadText(src, entry, node, signal) {
  try {
    const res = await fetch(src, {
      headers: { ...WEB_HEADERS, Range: `bytes=0-${TEXT_BYTES - 1}` },
      credentials: 'same-origin',
      signal,
    });
    if (!res.ok) throw await errorFrom(res);
    const text = new TextDecoder('utf-8', { fatal: false }).decode(await res.arrayBuffer());
    node.textContent = entry.size > TEXT_BYTES
      ? `${text}\n\n… (the first ${formatBytes(TEXT_BYTES)} of ${formatBytes(entry.size)}; download the file for the rest)`
      : text;
  } catch (e) {
    if (e.name !== 'AbortError') node.textContent = e.message || String(e);
  }
}

function close() {
  if (textAbort) textAbort.abort();
  // Stop media and free the frame when the preview closes.
  $('preview-body').replaceChildren();
  if ($('preview').open) $('preview').close();
}

$('preview-close').addEventListener('click', close);
$('preview').addEventListener('close', () => $('preview-body').replaceChildren());
$('preview').addEventListener('keydown', (ev) => {
  const media = ev.target instanceof HTMLMediaElement;
  if (ev.key === 'ArrowRight' && !media && list.length > 1) { index = (index + 1) % list.length; show(); }
  if (ev.key === 'ArrowLeft' && !media && list.length > 1) { index = (index - 1 + list.length) % list.length; show(); }
});
