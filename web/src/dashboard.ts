// The live dashboard: polls the `status` command once a second over the
// WebSocket and charts throughput, latency, queue, batch, KV cache and,
// where the server reports them, GPU memory, temperature and power.
import type { App } from './app';
import { Chart } from './chart';
import type { StatusObject } from './connection';
import { clear, formatBytes, formatDuration, formatNumber, h } from './dom';

const POLL_MS = 1000;

type Json = Record<string, unknown>;

function num(obj: unknown, ...path: string[]): number {
  let cur: unknown = obj;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return NaN;
    cur = (cur as Json)[key];
  }
  return typeof cur === 'number' ? cur : NaN;
}

// The first of several spellings a GPU field may have.
function pick(obj: Json, ...keys: string[]): number {
  for (const k of keys) {
    const v = k.includes('.') ? num(obj, ...k.split('.')) : num(obj, k);
    if (Number.isFinite(v)) return v;
  }
  return NaN;
}

interface GpuCharts {
  section: HTMLElement;
  memory: Chart;
  temperature: Chart;
  power: Chart;
  title: HTMLElement;
}

export class DashboardView {
  readonly el: HTMLElement;
  private cards = h('div', { class: 'cards' });
  private throughput = new Chart({ title: 'Server throughput', unit: 'tok/s', series: [{ name: 'tokens/s', color: '#3b82f6' }] });
  private ttft = new Chart({ title: 'TTFT per request', unit: 'ms', kind: 'bar', capacity: 40, series: [{ name: 'TTFT', color: '#f59e0b' }], format: (v) => v.toFixed(0) });
  private requestRate = new Chart({ title: 'Decode speed per request', unit: 'tok/s', kind: 'bar', capacity: 40, series: [{ name: 'tokens/s', color: '#8b5cf6' }] });
  private queue = new Chart({ title: 'Queue depth', unit: '', series: [{ name: 'queued', color: '#ef4444' }], integer: true, format: (v) => v.toFixed(0) });
  private running = new Chart({ title: 'Running sequences', unit: '', series: [{ name: 'running', color: '#10b981' }], integer: true, format: (v) => v.toFixed(0) });
  private kv = new Chart({ title: 'KV cache use', unit: '%', fixedMax: 100, series: [{ name: 'KV', color: '#0ea5e9' }] });
  private gpuBox = h('div', { class: 'gpu-box', hidden: true });
  private gpus: GpuCharts[] = [];
  private updatedEl = h('span', { class: 'muted updated' });
  private timer: number | undefined;
  private last: { generated: number; uptime: number } | null = null;
  private polling = false;

  constructor(private app: App) {
    const grid = h('div', { class: 'charts' }, this.throughput.el, this.ttft.el, this.requestRate.el, this.queue.el, this.running.el, this.kv.el);
    this.el = h(
      'section',
      { class: 'view dashboard-view' },
      h('div', { class: 'dash-head' }, h('h2', { text: 'Server' }), this.updatedEl),
      this.cards,
      grid,
      this.gpuBox,
    );
    this.app.conn.finished.subscribe((done) => {
      if (!done?.timings) return;
      if (Number.isFinite(done.timings.ttft_ms ?? NaN)) this.ttft.push([done.timings.ttft_ms!]);
      if ((done.usage?.completion_tokens ?? 0) > 1 && done.timings.tokens_per_s) this.requestRate.push([done.timings.tokens_per_s]);
    });
    this.renderCards(null);
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = window.setInterval(() => void this.poll(), POLL_MS);
    void this.poll();
  }

  private async poll(): Promise<void> {
    if (this.polling || !this.app.conn.connected) return;
    this.polling = true;
    try {
      this.update(await this.app.conn.status());
    } catch {
      // Disconnected: the connection badge says so; the next poll retries.
    } finally {
      this.polling = false;
    }
  }

  private update(s: StatusObject): void {
    const generated = num(s, 'tokens', 'generated_total');
    const uptime = num(s, 'uptime_s');
    if (this.last && uptime > this.last.uptime) {
      const rate = Math.max(0, (generated - this.last.generated) / (uptime - this.last.uptime));
      this.throughput.push([rate]);
    }
    this.last = { generated, uptime };
    this.queue.push([num(s, 'queue', 'queued')]);
    this.running.push([num(s, 'batch', 'running')]);
    this.kv.push([num(s, 'kv_cache', 'usage') * 100]);
    this.renderCards(s);
    this.renderGpus(s);
    this.updatedEl.textContent = `updated ${new Date().toLocaleTimeString()}`;
    this.el.dataset.polls = String(Number(this.el.dataset.polls ?? 0) + 1);
  }

  private renderCards(s: StatusObject | null): void {
    const model = (s?.model as Json | undefined) ?? {};
    const card = (label: string, value: string, sub = '') =>
      h('div', { class: 'card', 'data-card': label.toLowerCase() }, h('div', { class: 'card-label', text: label }), h('div', { class: 'card-value', text: value }), sub ? h('div', { class: 'card-sub', text: sub }) : null);
    const kvUsed = num(s, 'kv_cache', 'blocks_used');
    const kvTotal = num(s, 'kv_cache', 'blocks_total');
    const load = (s?.host as Json | undefined)?.load_average;
    clear(this.cards);
    this.cards.append(
      card('Model', String(model.id ?? '–'), String(model.path ?? '')),
      card('Running', `${formatNumber(num(s, 'batch', 'running'), 0)} / ${formatNumber(num(s, 'batch', 'batch_size'), 0)}`, 'sequences / batch size'),
      card('Queued', formatNumber(num(s, 'queue', 'queued'), 0), `of ${formatNumber(num(s, 'queue', 'max_queued_requests'), 0)} allowed`),
      card('KV cache', `${formatNumber(num(s, 'kv_cache', 'usage') * 100, 1)}%`, `${formatNumber(kvUsed, 0)} / ${formatNumber(kvTotal, 0)} blocks`),
      card('Tokens', formatNumber(num(s, 'tokens', 'generated_total'), 0), `generated; ${formatNumber(num(s, 'tokens', 'prompt_total'), 0)} prompt`),
      card('Context', formatNumber(num(s, 'context_window'), 0), 'tokens per sequence'),
      card('Connections', formatNumber(num(s, 'connections', 'open'), 0), `${formatNumber(num(s, 'connections', 'websockets'), 0)} WebSocket`),
      card('Host', formatBytes(num(s, 'host', 'process_rss_bytes')), Array.isArray(load) ? `load ${load.map((x) => Number(x).toFixed(2)).join(' ')}` : ''),
      card('Uptime', formatDuration(num(s, 'uptime_s')), s?.draining ? 'draining' : String(s?.server_version ? `v${s.server_version}` : '')),
    );
  }

  // GPUs appear under "gpus" (an array) when the server has telemetry.
  private renderGpus(s: StatusObject): void {
    const list = Array.isArray(s.gpus) ? (s.gpus as Json[]) : [];
    this.gpuBox.hidden = list.length === 0;
    if (!list.length) return;
    while (this.gpus.length < list.length) {
      const memory = new Chart({
        title: 'Memory and utilization',
        unit: '%',
        fixedMax: 100,
        series: [
          { name: 'memory used', color: '#6366f1' },
          { name: 'utilization', color: '#10b981' },
        ],
      });
      const temperature = new Chart({ title: 'Temperature', unit: '°C', series: [{ name: 'temperature', color: '#ef4444' }], format: (v) => v.toFixed(0) });
      const power = new Chart({ title: 'Power', unit: 'W', series: [{ name: 'power', color: '#f59e0b' }], format: (v) => v.toFixed(0) });
      const title = h('h3');
      const section = h('div', { class: 'gpu' }, title, h('div', { class: 'charts' }, memory.el, temperature.el, power.el));
      this.gpuBox.appendChild(section);
      this.gpus.push({ section, memory, temperature, power, title });
    }
    list.forEach((g, k) => {
      const charts = this.gpus[k];
      const used = pick(g, 'memory_used_bytes', 'memory_used', 'memory.used_bytes', 'memory.used');
      const total = pick(g, 'memory_total_bytes', 'memory_total', 'memory.total_bytes', 'memory.total');
      const temp = pick(g, 'temperature_c', 'temperature', 'temp_c');
      const power = pick(g, 'power_w', 'power_watts', 'power', 'power_draw_w');
      const name = typeof g.name === 'string' ? g.name : `GPU ${k}`;
      charts.title.textContent = `GPU ${Number.isFinite(num(g, 'index')) ? num(g, 'index') : k}: ${name}` + (Number.isFinite(total) ? ` · ${formatBytes(used)} / ${formatBytes(total)}` : '');
      const util = pick(g, 'utilization_gpu_percent', 'utilization_percent', 'utilization');
      charts.memory.push([Number.isFinite(used) && total > 0 ? (used / total) * 100 : NaN, util]);
      charts.temperature.el.hidden = !Number.isFinite(temp);
      charts.power.el.hidden = !Number.isFinite(power);
      if (Number.isFinite(temp)) charts.temperature.push([temp]);
      if (Number.isFinite(power)) charts.power.push([power]);
    });
    for (let k = list.length; k < this.gpus.length; k++) this.gpus[k].section.hidden = true;
  }
}
