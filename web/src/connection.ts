// One WebSocket to the UI's own origin (/ws, docs/PROTOCOL.md): init, then
// many generate requests multiplexed by id, plus status polls. Reconnects on
// its own with exponential backoff; the state is always observable.
import { Signal } from './dom';
import type { ApiErrorInfo } from './errors';

export type ConnectionPhase = 'connecting' | 'connected' | 'disconnected' | 'needs_key';

export interface ConnectionState {
  phase: ConnectionPhase;
  model?: string;
  contextSize?: number;
  serverVersion?: string;
  retryAt?: number; // epoch ms of the next attempt while disconnected
  lastError?: ApiErrorInfo;
}

export interface Timings {
  queue_ms?: number;
  ttft_ms?: number;
  total_ms?: number;
  tokens_per_s?: number;
}

export interface DoneEvent {
  id: string;
  finish_reason: string;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  timings?: Timings;
}

export interface GenerateHandlers {
  onToken(text: string): void;
  onDone(done: DoneEvent): void;
  onError(error: ApiErrorInfo): void;
}

export interface GenerateRequest {
  prompt?: string;
  messages?: { role: string; content: string }[];
  params: Record<string, unknown>;
  // Keeps a conversation on one backend behind `tandem ui` (docs/PROTOCOL.md, Bridge).
  conversation?: string;
}

export type StatusObject = Record<string, unknown>;

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 8000;

export class Connection {
  readonly state = new Signal<ConnectionState>({ phase: 'connecting' });
  // Every finished request (for the dashboard's TTFT and tokens/s charts).
  readonly finished = new Signal<DoneEvent | null>(null);

  private ws: WebSocket | null = null;
  private backoffMs = MIN_BACKOFF_MS;
  private retryTimer: number | undefined;
  private nextId = 1;
  private requests = new Map<string, GenerateHandlers>();
  private statusWaiters: { resolve: (s: StatusObject) => void; reject: (e: Error) => void }[] = [];

  constructor(
    private readonly url: string,
    private apiKey: () => string,
  ) {}

  start(): void {
    this.open();
    // A tab that comes back from the background retries at once.
    window.addEventListener('online', () => this.retryNow());
  }

  get connected(): boolean {
    return this.state.value.phase === 'connected';
  }

  retryNow(): void {
    if (this.state.value.phase !== 'disconnected') return;
    window.clearTimeout(this.retryTimer);
    this.open();
  }

  // Sends init again, e.g. after the user entered an API key.
  reauthenticate(): void {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.sendInit();
    else this.retryNow();
  }

  generate(req: GenerateRequest, handlers: GenerateHandlers): string | null {
    if (!this.ws || !this.connected) {
      handlers.onError({ code: 'disconnected', message: 'not connected to the server' });
      return null;
    }
    const id = `r${this.nextId++}`;
    this.requests.set(id, handlers);
    this.send({ command: 'generate', id, ...req });
    return id;
  }

  cancel(id: string): void {
    if (this.requests.has(id)) this.send({ command: 'cancel', id });
  }

  status(): Promise<StatusObject> {
    if (!this.ws || !this.connected) return Promise.reject(new Error('not connected'));
    return new Promise((resolve, reject) => {
      this.statusWaiters.push({ resolve, reject });
      this.send({ command: 'status' });
    });
  }

  private open(): void {
    this.state.set({ ...this.state.value, phase: 'connecting', retryAt: undefined });
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.sendInit();
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return; // compression is "none": every event is text
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(ev.data) as Record<string, unknown>;
      } catch {
        return;
      }
      this.dispatch(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failAll({ code: 'disconnected', message: 'the connection closed' });
      this.scheduleRetry();
    };
  }

  private sendInit(): void {
    const init: Record<string, unknown> = { command: 'init', compression: 'none' };
    const key = this.apiKey();
    if (key) init.api_key = key;
    this.send(init);
  }

  private send(obj: Record<string, unknown>): void {
    this.ws?.send(JSON.stringify(obj));
  }

  private scheduleRetry(): void {
    const delay = this.backoffMs * (0.8 + Math.random() * 0.4);
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    this.state.set({ ...this.state.value, phase: 'disconnected', retryAt: Date.now() + delay });
    window.clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => this.open(), delay);
  }

  private failAll(error: ApiErrorInfo): void {
    const handlers = [...this.requests.values()];
    this.requests.clear();
    for (const h of handlers) h.onError(error);
    for (const w of this.statusWaiters.splice(0)) w.reject(new Error(error.message));
  }

  private dispatch(msg: Record<string, unknown>): void {
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    switch (msg.event) {
      case 'ready':
        this.backoffMs = MIN_BACKOFF_MS;
        this.state.set({
          phase: 'connected',
          model: String(msg.model ?? ''),
          contextSize: Number(msg.context_size ?? 0) || undefined,
          serverVersion: String(msg.server_version ?? ''),
        });
        return;
      case 'token': {
        const h = id ? this.requests.get(id) : undefined;
        if (h && typeof msg.text === 'string') h.onToken(msg.text);
        return;
      }
      case 'done': {
        if (!id) return;
        const h = this.requests.get(id);
        this.requests.delete(id);
        const done = msg as unknown as DoneEvent;
        h?.onDone(done);
        this.finished.set(done);
        return;
      }
      case 'status':
        this.statusWaiters.shift()?.resolve(msg);
        return;
      case 'error': {
        const error: ApiErrorInfo = { code: String(msg.code ?? 'error'), message: String(msg.message ?? '') };
        if (id && this.requests.has(id)) {
          const h = this.requests.get(id)!;
          this.requests.delete(id);
          h.onError(error);
          return;
        }
        if (this.state.value.phase !== 'connected') this.initFailed(error);
        return;
      }
    }
  }

  // An error before `ready` answers our init.
  private initFailed(error: ApiErrorInfo): void {
    if (error.code === 'unauthorized') {
      this.state.set({ phase: 'needs_key', lastError: error });
      return;
    }
    if (error.code === 'loading') {
      this.state.set({ ...this.state.value, phase: 'connecting', lastError: error });
      window.setTimeout(() => this.reauthenticate(), 1000);
      return;
    }
    this.state.set({ ...this.state.value, lastError: error });
  }
}

export function defaultSocketUrl(): string {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws`;
}
