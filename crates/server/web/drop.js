// A file request's page: sends each chosen file to `<this link>/upload`,
// one after another, with its progress. The page shows nothing of the
// folder; the answer names the file as stored (with a number when its name
// was taken).

const form = document.getElementById('drop');
const input = document.getElementById('files');
const sent = document.getElementById('sent');

const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
};

function send(file, bar, note) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `${location.pathname.replace(/\/$/, '')}/upload?name=${encodeURIComponent(file.name)}`);
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable) bar.value = ev.loaded / ev.total;
    };
    xhr.onload = () => {
      let answer = null;
      try { answer = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201) {
        bar.value = 1;
        note.textContent = answer && answer.name !== file.name ? `sent as “${answer.name}”` : 'sent';
        note.className = 'done';
      } else {
        const why = answer?.error?.message || `the server answered ${xhr.status}`;
        note.textContent = `not sent: ${why}`;
        note.className = 'error';
      }
      resolve();
    };
    xhr.onerror = () => {
      note.textContent = 'not sent: the connection failed; try again';
      note.className = 'error';
      resolve();
    };
    xhr.send(file);
  });
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const files = [...input.files];
  if (!files.length) return;
  form.querySelector('button').disabled = true;
  const jobs = files.map((file) => {
    const bar = el('progress', { max: '1', value: '0', 'aria-label': `Progress of ${file.name}` });
    const note = el('span', { class: 'size', text: 'waiting' });
    sent.append(el('li', { 'data-name': file.name }, el('span', { text: file.name }), bar, note));
    return { file, bar, note };
  });
  for (const { file, bar, note } of jobs) {
    note.textContent = 'sending';
    await send(file, bar, note);
  }
  input.value = '';
  form.querySelector('button').disabled = false;
});
