// Herald's in-app inbox widget: a bell with the unread count and the list (read/unread, mark read, mark all
// read, archive), live over WebSocket, else Server-Sent Events, else long-poll, resuming from the last
// notification seen after any drop. No dependency, no build step: copy this file and inbox.css.
//
// Everything a user or a sender controls (titles, bodies, links, user ids) is put in the page as text
// (textContent), never as HTML; a link is kept only if it is http(s). The subscriber token lives in this
// tab's sessionStorage; it reads and changes one user's inbox only.
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const SAVED = 'herald.inbox';
  const PING_MS = 20000;  // the server closes a WebSocket after three missed heartbeats (heartbeat_s, 30 s by default)
  const POLL_TIMEOUT_S = 25;

  const state = {
    token: null, user: null, items: new Map(), unread: 0, lastId: null,
    mode: 'websocket',  // websocket, then sse, then poll: a transport that cannot open is not tried again in this tab
    conn: null, gen: 0, backoff: 500, retry: null, stopped: true,
  };

  // -- the server's API

  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: { Authorization: 'Bearer ' + state.token, ...(options.body ? { 'Content-Type': 'application/json' } : {}) },
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      const error = new Error(problem.detail || response.statusText);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  const userPath = () => '/v1/users/' + encodeURIComponent(state.user) + '/inbox';

  async function reconcile() {
    // What the server holds now: the list with its read states, and the unread count (a drop may have hidden reads).
    const page = await api(userPath() + '?limit=100');
    const fetched = new Map(page.items.map((item) => [item.id, item]));
    let top = null;
    for (const item of page.items) if (top === null || item.id > top) top = item.id;
    // a notification that came live while the list was asked is newer than all of it: keep it
    for (const [id, item] of state.items) if (!fetched.has(id) && (top === null || id > top)) fetched.set(id, item);
    state.items = fetched;
    for (const item of page.items) newest(item.id);
    if (page.items.length < 100) {
      // the whole inbox is here: count it, rather than ask a count that a live notification may overtake
      state.unread = [...fetched.values()].filter((item) => !item.read_at && !item.archived_at).length;
      render();
    } else {
      await refreshCount();
    }
  }

  async function refreshCount() {
    state.unread = (await api(userPath() + '/unread_count')).unread;
    render();
  }

  function newest(id) {
    if (id && (state.lastId === null || id > state.lastId)) state.lastId = id;  // ids sort by time (ULID-like)
  }

  // -- frames (the same JSON on every transport)

  function onFrame(frame) {
    switch (frame.type) {
      case 'notification':
        newest(frame.id);
        if (!state.items.has(frame.id)) {
          state.items.set(frame.id, { ...frame, read_at: null });
          state.unread += 1;
        }
        if (state.conn && state.conn.ack) state.conn.ack(frame.id);
        break;
      case 'read':
        for (const id of frame.ids) markRead(id, frame.read_at);
        break;
      case 'read_all':
        for (const item of state.items.values()) {
          if (frame.through === null || item.id <= frame.through) markRead(item.id, frame.read_at);
        }
        refreshCount().catch(() => {});
        break;
      case 'archived':
        for (const id of frame.ids) {
          const item = state.items.get(id);
          if (item && !item.read_at) state.unread = Math.max(0, state.unread - 1);
          state.items.delete(id);
        }
        break;
      case 'synced':
        live();
        refreshCount().catch(() => {});  // a replay may hold notifications read meanwhile
        break;
      case 'error':
        if (frame.code === 4003 || frame.code === 4100) return expired(frame.detail);
        break;
      default:
        break;  // pong, or a frame type this widget does not know: ignored
    }
    render();
  }

  function markRead(id, at) {
    const item = state.items.get(id);
    if (item && !item.read_at) {
      item.read_at = at;
      state.unread = Math.max(0, state.unread - 1);
    }
  }

  // -- transports

  function connect() {
    if (state.stopped) return;
    const gen = ++state.gen;
    const current = () => gen === state.gen && !state.stopped;
    setStatus(state.mode, 'connecting');
    if (state.mode === 'websocket' && 'WebSocket' in window) state.conn = openSocket(current);
    else if (state.mode !== 'poll' && 'EventSource' in window) { state.mode = 'sse'; state.conn = openEvents(current); }
    else { state.mode = 'poll'; state.conn = openPoll(current); }
  }

  function openSocket(current) {
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const resumeFrom = state.lastId;
    let url = scheme + location.host + '/v1/ws?token=' + encodeURIComponent(state.token);
    if (resumeFrom) url += '&last_id=' + encodeURIComponent(resumeFrom);
    const ws = new WebSocket(url);
    let opened = false, heard = Date.now(), pinger = null;
    ws.onopen = () => {
      if (!current()) return ws.close();
      opened = true;
      if (!resumeFrom) {
        // Nothing to resume from (an empty inbox): go live (the first frame lets held ones through) and read the list
        // again for what came before the socket; a sync from nothing would replay archived and read notifications.
        ws.send(JSON.stringify({ type: 'ping' }));
        live();
        reconcile().catch(() => {});
      }
      pinger = setInterval(() => {
        if (Date.now() - heard > 2 * PING_MS + 5000) return ws.close();  // a dead network: no pong in two rounds
        ws.send(JSON.stringify({ type: 'ping' }));
      }, PING_MS);
    };
    ws.onmessage = (event) => {
      heard = Date.now();
      if (current()) onFrame(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      clearInterval(pinger);
      if (!current()) return;
      if (!opened && navigator.onLine) state.mode = 'sse';  // blocked (a proxy, a firewall): the next transport
      if (event.code === 4003 || event.code === 4100) return expired(event.reason);
      if (event.code === 4101) state.lastId = null;  // a cursor the server refuses: start over
      dropped();
    };
    return {
      ack: (id) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'ack', id })); },
      close: () => { clearInterval(pinger); ws.close(); },
    };
  }

  function openEvents(current) {
    let url = '/v1/sse?token=' + encodeURIComponent(state.token);
    if (state.lastId) url += '&last_event_id=' + encodeURIComponent(state.lastId);
    const source = new EventSource(url);
    let opened = false;
    source.onopen = () => { opened = true; };
    for (const type of ['notification', 'read', 'read_all', 'archived', 'synced']) {
      source.addEventListener(type, (event) => { if (current()) onFrame(JSON.parse(event.data)); });
    }
    source.addEventListener('error', (event) => {
      if (!current()) return source.close();
      if (event.data !== undefined) return onFrame(JSON.parse(event.data));  // the server's `error` event
      source.close();  // the connection's error: reconnect ourselves (and reconcile first)
      if (!opened && navigator.onLine) state.mode = 'poll';
      dropped();
    });
    return { close: () => source.close() };
  }

  function openPoll(current) {
    const controller = new AbortController();
    (async () => {
      let first = true;  // the first poll answers at once: the transport works, the widget is live
      while (current()) {
        let url = '/v1/poll?timeout=' + (first ? 0 : POLL_TIMEOUT_S);
        first = false;
        if (state.lastId) url += '&after=' + encodeURIComponent(state.lastId);
        let answer;
        try {
          answer = await api(url, { signal: controller.signal });
        } catch (error) {
          if (!current()) return;
          if (error.status === 401) return expired(error.message);
          return dropped();
        }
        if (!current()) return;
        live();
        for (const frame of answer.items) onFrame(frame);
        newest(answer.last_id);
      }
    })();
    return { close: () => controller.abort() };
  }

  function live() {
    state.backoff = 500;
    setStatus(state.mode, 'live');
  }

  function dropped() {
    // Reconnect with backoff (jitter), reconcile the list first, then resume from the last id seen: no gap.
    if (state.stopped) return;
    setStatus(state.mode, 'reconnecting');
    clearTimeout(state.retry);
    const wait = state.backoff * (0.5 + Math.random() / 2);
    state.backoff = Math.min(state.backoff * 2, 10000);
    state.retry = setTimeout(() => {
      reconcile().catch(() => {}).finally(connect);
    }, wait);
  }

  function reconnectNow() {
    if (state.stopped) return;
    if (state.conn) state.conn.close();
    state.gen++;
    state.backoff = 500;
    dropped();
  }

  function wentOffline() {
    // The connection is as good as gone (a socket may take minutes to notice): close it, resume once back online.
    if (state.stopped) return;
    if (state.conn) state.conn.close();
    state.conn = null;
    state.gen++;
    clearTimeout(state.retry);
    setStatus(state.mode, 'offline');
  }

  // -- actions

  async function act(path, body) {
    try {
      await api(path, { method: 'POST', body: JSON.stringify(body || {}) });
    } catch (error) {
      setStatus(state.mode, 'error: ' + error.message);
    }
  }

  async function readOne(id) {
    await act(userPath() + '/' + encodeURIComponent(id) + '/read');
    markRead(id, new Date().toISOString());
    render();
  }

  async function readAll() {
    await act(userPath() + '/read_all');
    await refreshCount().catch(() => {});
    for (const item of state.items.values()) if (!item.read_at) markRead(item.id, new Date().toISOString());
    render();
  }

  async function archive(id) {
    await act(userPath() + '/' + encodeURIComponent(id) + '/archive');
    onFrame({ type: 'archived', ids: [id] });
  }

  // -- the page

  function setStatus(transport, what) {
    const status = $('status');
    status.dataset.transport = transport;
    status.dataset.state = what;
    status.textContent = transport + ': ' + what;
  }

  function safeUrl(raw) {
    try {
      const url = new URL(raw, location.href);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function render() {
    const badge = $('badge');
    badge.textContent = String(state.unread);
    badge.dataset.count = String(state.unread);
    $('bell').setAttribute('aria-label', state.unread + ' unread notifications');
    const list = $('list');
    const items = [...state.items.values()].filter((item) => !item.archived_at).sort((a, b) => (a.id < b.id ? 1 : -1));
    list.replaceChildren(...items.map((item) => {
      const li = element('li', 'item');
      li.dataset.id = item.id;
      li.dataset.read = item.read_at ? 'true' : 'false';
      const text = element('div', 'text');
      const title = element('div', 'title', item.title);
      const href = item.url ? safeUrl(item.url) : null;
      if (href) {
        const link = element('a', 'title', item.title);
        link.href = href;
        link.rel = 'noopener noreferrer';
        link.target = '_blank';
        text.append(link);
      } else {
        text.append(title);
      }
      if (item.body) text.append(element('div', 'body', item.body));
      text.append(element('div', 'when', new Date(item.created_at).toLocaleString()));
      li.append(text);
      if (!item.read_at) {
        const read = element('button', 'read', 'Mark read');
        read.type = 'button';
        read.addEventListener('click', () => readOne(item.id));
        li.append(read);
      }
      const arch = element('button', 'archive', 'Archive');
      arch.type = 'button';
      arch.addEventListener('click', () => archive(item.id));
      li.append(arch);
      return li;
    }));
    $('empty').hidden = items.length > 0;
  }

  function expired(detail) {
    stop();
    sessionStorage.removeItem(SAVED);
    $('login-error').textContent = 'Your session ended (' + (detail || 'token expired') + '): open the inbox again.';
    $('login').hidden = false;
    $('inbox').hidden = true;
    $('bell').hidden = true;
  }

  function stop() {
    state.stopped = true;
    state.gen++;
    clearTimeout(state.retry);
    if (state.conn) state.conn.close();
    state.conn = null;
  }

  async function start(token, user) {
    Object.assign(state, { token, user, items: new Map(), unread: 0, lastId: null, stopped: false, backoff: 500 });
    $('who').textContent = user;
    $('login').hidden = true;
    $('inbox').hidden = false;
    $('bell').hidden = false;
    try {
      await reconcile();
    } catch (error) {
      if (error.status === 401) return expired(error.message);
    }
    render();
    connect();
  }

  async function login(event) {
    event.preventDefault();
    const key = $('api-key').value, user = $('user-id').value.trim();
    $('api-key').value = '';  // used once, kept nowhere
    $('login-error').textContent = '';
    try {
      const response = await fetch('/v1/users/' + encodeURIComponent(user) + '/tokens', {
        method: 'POST', headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' }, body: '{}',
      });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.detail || response.statusText);
      sessionStorage.setItem(SAVED, JSON.stringify({ token: answer.token, user, expires_at: answer.expires_at }));
      await start(answer.token, user);
    } catch (error) {
      $('login-error').textContent = error.message;
    }
  }

  function init() {
    $('login').addEventListener('submit', login);
    $('read-all').addEventListener('click', readAll);
    $('logout').addEventListener('click', () => { stop(); sessionStorage.removeItem(SAVED); location.reload(); });
    $('bell').addEventListener('click', () => $('list').scrollIntoView());
    window.addEventListener('online', reconnectNow);
    window.addEventListener('offline', wentOffline);
    const saved = JSON.parse(sessionStorage.getItem(SAVED) || 'null');
    if (saved && Date.parse(saved.expires_at) > Date.now()) start(saved.token, saved.user);
  }

  init();
})();
