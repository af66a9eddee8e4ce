// A hand-drawn canvas chart: lines (time series) or bars (one per request).
// It keeps the last `capacity` points and redraws on resize.
export interface Series {
  name: string;
  color: string;
}

export interface ChartOptions {
  title: string;
  unit: string;
  series: Series[];
  kind?: 'line' | 'bar';
  capacity?: number;
  fixedMax?: number; // e.g. 100 for a percentage
  integer?: boolean; // counts: whole-number gridlines
  format?: (v: number) => string;
}

export class Chart {
  readonly el: HTMLElement;
  private canvas: HTMLCanvasElement;
  private valueEl: HTMLElement;
  private points: number[][] = [];
  private readonly capacity: number;

  constructor(private opts: ChartOptions) {
    this.capacity = opts.capacity ?? 120;
    this.canvas = document.createElement('canvas');
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', opts.title);
    this.valueEl = document.createElement('span');
    this.valueEl.className = 'chart-value';
    const head = document.createElement('div');
    head.className = 'chart-head';
    const title = document.createElement('span');
    title.className = 'chart-title';
    title.textContent = opts.title;
    head.append(title, this.valueEl);
    const legend = document.createElement('div');
    legend.className = 'chart-legend';
    if (opts.series.length > 1) {
      for (const s of opts.series) {
        const item = document.createElement('span');
        const swatch = document.createElement('i');
        swatch.style.background = s.color;
        item.append(swatch, s.name);
        legend.append(item);
      }
    }
    this.el = document.createElement('div');
    this.el.className = 'chart';
    this.el.append(head, this.canvas, legend);
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  get count(): number {
    return this.points.length;
  }

  push(values: number[]): void {
    this.points.push(values);
    if (this.points.length > this.capacity) this.points.shift();
    const fmt = this.opts.format ?? ((v: number) => v.toFixed(v >= 100 ? 0 : 1));
    this.valueEl.textContent = values.map((v) => (Number.isFinite(v) ? `${fmt(v)} ${this.opts.unit}`.trim() : '–')).join(' / ');
    this.draw();
  }

  draw(): void {
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth;
    const hgt = this.canvas.clientHeight;
    if (!w || !hgt) return;
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(hgt * dpr)) {
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(hgt * dpr);
    }
    const ctx = this.canvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    const style = getComputedStyle(this.el);
    const grid = style.getPropertyValue('--chart-grid').trim() || '#8883';
    const label = style.getPropertyValue('--chart-label').trim() || '#888';
    const left = 40;
    const right = 6;
    const top = 6;
    const bottom = 14;
    const plotW = w - left - right;
    const plotH = hgt - top - bottom;
    let max = this.opts.fixedMax ?? 0;
    if (this.opts.fixedMax === undefined) {
      for (const p of this.points) for (const v of p) if (Number.isFinite(v)) max = Math.max(max, v);
      max = this.opts.integer ? Math.max(4, Math.ceil(max / 4) * 4) : niceCeil(max || 1);
    }
    ctx.font = '10px system-ui, sans-serif';
    ctx.fillStyle = label;
    ctx.strokeStyle = grid;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let k = 0; k <= 4; k++) {
      const y = top + plotH - (plotH * k) / 4;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(w - right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillText(shortNumber((max * k) / 4), left - 4, y);
    }
    if (!this.points.length) {
      ctx.textAlign = 'center';
      ctx.fillText('waiting for data', left + plotW / 2, top + plotH / 2);
      return;
    }
    const yOf = (v: number) => top + plotH - (Math.min(v, max) / max) * plotH;
    if (this.opts.kind === 'bar') {
      const slot = plotW / this.capacity;
      const offset = this.capacity - this.points.length;
      ctx.fillStyle = this.opts.series[0].color;
      this.points.forEach((p, k) => {
        const v = p[0];
        if (!Number.isFinite(v)) return;
        const x = left + (offset + k) * slot + slot * 0.15;
        ctx.fillRect(x, yOf(v), Math.max(1, slot * 0.7), top + plotH - yOf(v));
      });
      return;
    }
    const step = plotW / Math.max(1, this.capacity - 1);
    const offset = this.capacity - this.points.length;
    this.opts.series.forEach((s, idx) => {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.75;
      ctx.beginPath();
      let started = false;
      this.points.forEach((p, k) => {
        const v = p[idx];
        if (!Number.isFinite(v)) {
          started = false;
          return;
        }
        const x = left + (offset + k) * step;
        if (started) ctx.lineTo(x, yOf(v));
        else ctx.moveTo(x, yOf(v));
        started = true;
      });
      ctx.stroke();
      if (this.opts.series.length === 1) {
        ctx.lineTo(left + (offset + this.points.length - 1) * step, top + plotH);
        ctx.lineTo(left + offset * step, top + plotH);
        ctx.closePath();
        ctx.globalAlpha = 0.12;
        ctx.fillStyle = s.color;
        ctx.fill();
        ctx.globalAlpha = 1;
      }
    });
  }
}

function niceCeil(v: number): number {
  const exp = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * exp) return m * exp;
  return 10 * exp;
}

function shortNumber(v: number): string {
  if (v >= 1e9) return `${+(v / 1e9).toFixed(1)}G`;
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(v < 1 ? 2 : v < 10 ? 1 : 0)}`;
}
