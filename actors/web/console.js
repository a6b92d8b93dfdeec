// Herald's operator console: the node live (GET /v1/admin/stream), its dead letters, its latest notifications.
// No dependency, no build step. The admin key is asked once, kept in this tab's sessionStorage and sent in the
// Authorization header only (never in a URL). Everything the server sends is put in the page as text.
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const KEY = 'herald.console.key';
  const HISTORY = 60;  // samples kept for the charts (one a second)
  const CHANNELS = ['email', 'sms', 'push', 'web', 'webhook'];

  const state = { key: null, controller: null, previous: null, history: {}, selected: null, job: null, retry: null };

  // -- the admin API

  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: { Authorization: 'Bearer ' + state.key, ...(options.body ? { 'Content-Type': 'application/json' } : {}) },
    });
    const answer = await response.json().catch(() => ({}));
    if (response.status === 401 || response.status === 403) {
      forget(answer.detail || 'this key is not an admin key');
      throw new Error(answer.detail || 'unauthorized');
    }
    if (!response.ok) throw new Error(answer.detail || response.statusText);
    return answer;
  }

  // -- the live feed: Server-Sent Events read with fetch (an EventSource cannot send the Authorization header)

  async function follow() {
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    setStatus('connecting');
    try {
      const response = await fetch('/v1/admin/stream', {
        headers: { Authorization: 'Bearer ' + state.key, Accept: 'text/event-stream' }, signal: controller.signal,
      });
      if (response.status === 401 || response.status === 403) {
        const problem = await response.json().catch(() => ({}));
        return forget(problem.detail || 'this key is not an admin key');
      }
      if (!response.ok) throw new Error('stream: ' + response.status);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = 'message', data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (event === 'snapshot' && data) onSnapshot(JSON.parse(data));
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    if (state.controller !== controller || !state.key) return;
    setStatus('reconnecting');
    clearTimeout(state.retry);
    state.retry = setTimeout(follow, 2000);
  }

  function onSnapshot(snap) {
    setStatus('live');
    const at = Date.parse(snap.at);
    const prev = state.previous;
    const dt = prev ? Math.max(0.001, (at - prev.at) / 1000) : null;
    const counts = (s, channel) => {
      const d = s.deliveries[channel] || {};
      return {
        accepted: s.accepted[channel] || 0,
        delivered: (d.delivered || 0) + (d.sent || 0),
        failed: (d.retry || 0) + (d.failed || 0) + (d.dead_lettered || 0),
      };
    };
    const rows = CHANNELS.map((channel) => {
      const now = counts(snap, channel);
      const rate = { accepted: 0, delivered: 0, failed: 0 };
      if (dt) {
        const before = counts(prev.snap, channel);
        for (const k of Object.keys(rate)) rate[k] = Math.max(0, (now[k] - before[k]) / dt);
      }
      const h = (state.history[channel] = state.history[channel] || []);
      h.push(rate);
      if (h.length > HISTORY) h.shift();
      return [channel, rate, h];
    });
    state.previous = { at, snap };
    fill('throughput', rows.map(([channel, rate, h]) => [
      channel, num(rate.accepted), num(rate.delivered), num(rate.failed), spark(h),
    ]), (tr, row) => { tr.dataset.channel = row[0]; });
    fill('providers', snap.circuits.filter((c) => c.state !== 'unavailable' || c.channel !== 'web').map((c) => [
      c.channel, badge(c.state, c.retry_at), String(c.consecutive_failures),
      bucket(c.tokens, c.bucket_capacity), c.in_flight + ' / ' + c.max_in_flight, String(c.opened),
    ]), (tr, row) => { tr.dataset.channel = row[0]; });
    const transitions = $('transitions');
    transitions.replaceChildren(...snap.transitions.map((t) => {
      const li = text('li', t.at.slice(11, 19) + '  ' + t.channel + ': ' + t.was + ' \u2192 ' + t.now);
      li.dataset.channel = t.channel;
      li.dataset.now = t.now;
      return li;
    }));
    if (!snap.transitions.length) transitions.replaceChildren(text('li', 'none seen since this node started', 'muted'));
    const topics = new Map();  // one row per topic: its total, then each partition's lag
    for (const l of snap.lag) {
      if (!topics.has(l.topic)) topics.set(l.topic, []);
      topics.get(l.topic).push(l);
    }
    fill('lag', [...topics].map(([topic, parts]) => [
      topic, String(parts.reduce((sum, l) => sum + l.lag, 0)), parts.map((l) => l.partition + ': ' + l.lag).join('  '),
    ]), (tr, row) => { tr.dataset.topic = row[0]; });
    fill('sessions', Object.entries(snap.sessions).map(([transport, open]) => [transport, String(open)]),
      (tr, row) => { tr.dataset.transport = row[0]; });
    fill('dlq-counts', Object.entries(snap.dlq).map(([channel, n]) => [channel, String(n)]),
      (tr, row) => { tr.dataset.channel = row[0]; });
    fill('recent', snap.recent.map((r) => [r.id, r.user_id, r.channels.join(', '), r.at.slice(11, 23)]), (tr, row) => {
      tr.dataset.id = row[0];
      tr.addEventListener('click', () => { state.selected = row[0]; timeline(); });
    });
    if (state.selected) timeline();
  }

  // -- dead letters

  function selection() {
    const channel = $('dlq-channel').value, nid = $('dlq-nid').value.trim();
    if (nid) return { notification_id: nid };
    if (channel) return { channel };
    return { all: true };
  }

  let browsing = 0;  // the latest browse: an earlier one answering later must not overwrite its table

  async function browse(event) {
    if (event) event.preventDefault();
    const channel = $('dlq-channel').value, nid = $('dlq-nid').value.trim();
    const mine = ++browsing;
    try {
      let query = '/v1/admin/dlq?limit=100';
      if (channel) query += '&channel=' + encodeURIComponent(channel);
      if (nid) query += '&notification_id=' + encodeURIComponent(nid);
      const page = await api(query);
      if (mine !== browsing) return;
      const items = page.items;
      fill('dlq', items.map((e) => [
        String(e.id), e.channel, e.notification_id, e.user_id, String(e.attempts), e.error, e.dead_lettered_at.slice(0, 19),
      ]), (tr, row) => { tr.dataset.id = row[0]; });
      $('dlq-total').textContent = page.total + ' in the queue' + (channel ? ' of ' + channel : '') +
        (page.next_cursor ? ' (the first 100 shown)' : '');
    } catch (error) {
      if (mine === browsing) $('dlq-total').textContent = error.message;
    }
  }

  async function runJob(kind) {
    const chosen = selection();
    const what = chosen.all ? 'every dead letter' : JSON.stringify(chosen);
    if (kind === 'discard' && !window.confirm('Discard ' + what + '? This cannot be undone.')) return;
    const line = $('dlq-job');
    try {
      let job = await api('/v1/admin/dlq' + (kind === 'replay' ? '/replay' : ''), {
        method: kind === 'replay' ? 'POST' : 'DELETE', body: JSON.stringify(chosen),
      });
      state.job = job.id;
      while (state.job === job.id) {
        line.dataset.state = job.state;
        line.textContent = job.kind + ' ' + job.id + ': ' + job.state + ', ' + job.total + ' taken, ' + job.replayed +
          ' replayed, ' + job.discarded + ' discarded, ' + job.skipped + ' skipped, ' + job.errors + ' errors' +
          (job.error ? ' (' + job.error + ')' : '');
        if (job.state === 'done' || job.state === 'failed') break;
        await new Promise((resolve) => setTimeout(resolve, 300));
        job = await api('/v1/admin/jobs/' + encodeURIComponent(job.id));
      }
      browse();
    } catch (error) {
      line.dataset.state = 'failed';
      line.textContent = error.message;
    }
  }

  // -- a notification's timeline

  async function timeline() {
    const id = state.selected;
    const box = $('timeline');
    try {
      const view = await api('/v1/notifications/' + encodeURIComponent(id));
      if (state.selected !== id) return;
      const parts = [text('h3', id + ' \u2014 ' + (view.user_id || view.topic || ''))];
      for (const [channel, status] of Object.entries(view.channels || {})) {
        const section = text('div', '');
        section.dataset.channel = channel;
        section.append(text('strong', channel + ': ' + status.status + (status.final ? ' (final)' : '')));
        const list = document.createElement('ol');
        for (const step of status.attempts) {
          list.append(text('li', step.at.slice(11, 23) + '  ' + step.status + (step.detail ? ' \u2014 ' + step.detail : '')));
        }
        section.append(list);
        parts.push(section);
      }
      box.replaceChildren(...parts);
    } catch (error) {
      box.replaceChildren(text('p', error.message, 'error'));
    }
  }

  // -- drawing (text only: nothing the server sends becomes HTML)

  function text(tag, content, className) {
    const node = document.createElement(tag);
    node.textContent = content;
    if (className) node.className = className;
    return node;
  }

  function num(x) { return x.toFixed(x < 10 ? 1 : 0); }

  function fill(tableId, rows, decorate) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren(...rows.map((row) => {
      const tr = document.createElement('tr');
      for (const cell of row) {
        const td = document.createElement('td');
        if (cell instanceof Node) td.append(cell);
        else td.textContent = cell;
        tr.append(td);
      }
      if (decorate) decorate(tr, row);
      return tr;
    }));
  }

  function badge(breaker, retryAt) {
    const span = text('span', breaker.replace('_', ' ') + (breaker === 'open' && retryAt ? ' until ' + retryAt.slice(11, 19) : ''), 'state');
    span.dataset.state = breaker;
    return span;
  }

  function bucket(tokens, capacity) {
    const outer = text('span', '', 'fill');
    const inner = document.createElement('span');
    inner.style.width = (capacity > 0 ? Math.min(100, (100 * tokens) / capacity) : 0) + '%';
    outer.append(inner);
    outer.title = tokens.toFixed(1) + ' of ' + capacity;
    const wrap = document.createElement('span');
    wrap.append(outer, document.createTextNode(' ' + tokens.toFixed(0) + ' / ' + capacity));
    return wrap;
  }

  function spark(history) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 ' + HISTORY + ' 30');
    svg.setAttribute('preserveAspectRatio', 'none');
    const top = Math.max(1, ...history.map((r) => Math.max(r.delivered, r.failed)));
    for (const key of ['delivered', 'failed']) {
      const line = document.createElementNS(ns, 'polyline');
      line.setAttribute('class', key);
      line.setAttribute('points', history.map((r, i) => (HISTORY - history.length + i) + ',' + (29 - (28 * r[key]) / top).toFixed(1)).join(' '));
      svg.append(line);
    }
    return svg;
  }

  function setStatus(what) {
    $('status').dataset.state = what;
    $('status').textContent = what;
  }

  // -- the key

  function forget(why) {
    sessionStorage.removeItem(KEY);
    state.key = null;
    if (state.controller) state.controller.abort();
    $('console').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = why || '';
    setStatus('offline');
  }

  function open(key) {
    state.key = key;
    $('login').hidden = true;
    $('console').hidden = false;
    $('logout').hidden = false;
    follow();
    browse();
  }

  function init() {
    $('login').addEventListener('submit', (event) => {
      event.preventDefault();
      const key = $('admin-key').value.trim();
      $('admin-key').value = '';
      sessionStorage.setItem(KEY, key);
      open(key);
    });
    $('logout').addEventListener('click', () => forget(''));
    $('dlq-filter').addEventListener('submit', browse);
    $('dlq-replay').addEventListener('click', () => runJob('replay'));
    $('dlq-discard').addEventListener('click', () => runJob('discard'));
    const saved = sessionStorage.getItem(KEY);
    if (saved) open(saved);
  }

  init();
})();
