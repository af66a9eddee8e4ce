// Tandem's web UI: chat, completion and a live dashboard, talking to the
// server it was loaded from (WebSocket /ws).
import './style.css';
import type { App } from './app';
import { ChatView } from './chat';
import { CompletionView } from './completion';
import { Connection, defaultSocketUrl, type ConnectionState } from './connection';
import { DashboardView } from './dashboard';
import { h, Signal } from './dom';
import { describeError } from './errors';
import { loadApiKey, loadSettings, saveApiKey } from './settings';
import { settingsPanel } from './settings_panel';
import { ConversationStore } from './store';

type Tab = 'chat' | 'completion' | 'dashboard';
const tabs: { id: Tab; label: string }[] = [
  { id: 'chat', label: 'Chat' },
  { id: 'completion', label: 'Completion' },
  { id: 'dashboard', label: 'Dashboard' },
];

function main(): void {
  const toast = h('div', { class: 'toast', role: 'status', hidden: true });
  let toastTimer: number | undefined;
  const app: App = {
    conn: new Connection(defaultSocketUrl(), loadApiKey),
    store: new ConversationStore(),
    settings: new Signal(loadSettings()),
    notify(text: string) {
      toast.textContent = text;
      toast.hidden = false;
      window.clearTimeout(toastTimer);
      toastTimer = window.setTimeout(() => (toast.hidden = true), 4000);
    },
  };

  const chat = new ChatView(app);
  const completion = new CompletionView(app);
  const dashboard = new DashboardView(app);
  const views: Record<Tab, { el: HTMLElement; focus?: () => void }> = { chat, completion, dashboard };

  const tabButtons = tabs.map((t) => h('a', { class: 'tab', href: `#${t.id}`, text: t.label, 'data-tab': t.id }));
  const badge = h('button', { class: 'conn', type: 'button', 'data-state': 'connecting', title: 'Connection to the server' });
  const modelEl = h('span', { class: 'model-name' });
  const settingsButton = h('button', { class: 'ghost settings-button', type: 'button', text: '⚙', title: 'Settings', 'aria-label': 'Settings' });
  const header = h(
    'header',
    { class: 'top' },
    h('div', { class: 'brand' }, h('span', { class: 'logo', 'aria-hidden': 'true' }), 'Tandem'),
    h('nav', { class: 'tabs' }, ...tabButtons),
    h('div', { class: 'status-area' }, modelEl, badge, settingsButton),
  );
  const keyPrompt = apiKeyPrompt(app);
  const main = h('main', {}, chat.el, completion.el, dashboard.el);
  const panelHost = h('div', { class: 'panel-host', hidden: true });
  panelHost.appendChild(settingsPanel(app, () => (panelHost.hidden = true)));
  panelHost.addEventListener('click', (e) => {
    if (e.target === panelHost) panelHost.hidden = true;
  });
  settingsButton.addEventListener('click', () => (panelHost.hidden = !panelHost.hidden));
  document.body.append(header, keyPrompt.el, main, panelHost, toast);

  const show = () => {
    const tab = (tabs.find((t) => `#${t.id}` === location.hash)?.id ?? 'chat') as Tab;
    for (const t of tabs) views[t.id].el.hidden = t.id !== tab;
    for (const b of tabButtons) b.classList.toggle('active', b.dataset.tab === tab);
    document.title = `Tandem · ${tabs.find((t) => t.id === tab)!.label}`;
    views[tab].focus?.();
  };
  window.addEventListener('hashchange', show);
  show();

  // The badge: connected / connecting / model loading (with progress) /
  // disconnected (retry countdown) / API key needed.
  let countdown: number | undefined;
  let loadProgress = '';
  const renderBadge = (s: ConnectionState) => {
    window.clearInterval(countdown);
    badge.dataset.state = s.phase;
    modelEl.textContent = s.phase === 'connected' ? (s.model ?? '') : '';
    const loading = s.phase === 'connecting' && s.lastError?.code === 'loading';
    if (!loading) loadProgress = '';
    const paint = () => {
      if (s.phase === 'connected') badge.textContent = 'connected';
      else if (s.phase === 'connecting') badge.textContent = loading ? `model loading${loadProgress ? ` ${loadProgress}` : '…'}` : 'connecting…';
      else if (s.phase === 'needs_key') badge.textContent = 'API key needed';
      else {
        const left = Math.max(0, Math.ceil(((s.retryAt ?? Date.now()) - Date.now()) / 1000));
        badge.textContent = left > 0 ? `disconnected · retry in ${left}s` : 'disconnected';
      }
    };
    paint();
    if (s.phase === 'disconnected') countdown = window.setInterval(paint, 500);
    if (loading) {
      void fetchLoadProgress().then((p) => {
        loadProgress = p;
        if (app.conn.state.value === s) paint();
      });
    }
    badge.title = s.phase === 'disconnected' ? 'Disconnected from the server; click to retry now' : `Connection: ${s.phase}`;
    keyPrompt.show(s.phase === 'needs_key', s.lastError ? describeError(s.lastError).detail : '');
  };
  badge.addEventListener('click', () => app.conn.retryNow());
  app.conn.state.subscribe(renderBadge);
  renderBadge(app.conn.state.value);

  app.conn.start();
  dashboard.start();
  void chat.init();
}

// While the server loads its model, GET /v1/status reports the bytes read.
async function fetchLoadProgress(): Promise<string> {
  try {
    const key = loadApiKey();
    const res = await fetch('/v1/status', { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    const status = (await res.json()) as { state?: string; progress?: { bytes_done?: number; bytes_total?: number } };
    const done = status.progress?.bytes_done ?? 0;
    const total = status.progress?.bytes_total ?? 0;
    return status.state === 'loading' && total > 0 ? `${Math.floor((100 * done) / total)}%` : '';
  } catch {
    return '';
  }
}

// Shown when the server answers init with `unauthorized`.
function apiKeyPrompt(app: App): { el: HTMLElement; show(visible: boolean, detail: string): void } {
  const input = h('input', { type: 'password', autocomplete: 'off', placeholder: 'API key', 'aria-label': 'API key' });
  const detail = h('small', { class: 'muted' });
  const form = h(
    'form',
    { class: 'key-prompt', hidden: true },
    h('strong', { text: 'This server needs an API key.' }),
    input,
    h('button', { class: 'primary small', type: 'submit', text: 'Connect' }),
    detail,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    saveApiKey(input.value.trim());
    app.conn.reauthenticate();
  });
  return {
    el: form,
    show(visible, text) {
      const wasHidden = form.hidden;
      form.hidden = !visible;
      detail.textContent = loadApiKey() ? 'The saved key was refused.' : text;
      if (visible && wasHidden) input.focus();
    },
  };
}

main();
