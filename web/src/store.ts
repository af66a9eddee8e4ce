// Conversations live in the browser (IndexedDB, database "tandem", store
// "conversations"); nothing is kept on the server.
import type { ApiErrorInfo } from './errors';

export interface MessageStats {
  prompt_tokens?: number;
  completion_tokens?: number;
  ttft_ms?: number;
  tokens_per_s?: number;
  finish_reason?: string;
}

export interface ChatMessage {
  role: 'user' | 'assistant';
  content: string;
  stats?: MessageStats;
  error?: ApiErrorInfo;
}

export interface Conversation {
  id: string;
  title: string;
  created: number;
  updated: number;
  system: string;
  messages: ChatMessage[];
}

const DB_NAME = 'tandem';
const STORE = 'conversations';

export class ConversationStore {
  private db: Promise<IDBDatabase>;

  constructor() {
    this.db = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => {
        const store = req.result.createObjectStore(STORE, { keyPath: 'id' });
        store.createIndex('updated', 'updated');
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error ?? new Error('IndexedDB is not available'));
    });
  }

  async list(): Promise<Conversation[]> {
    const all = await this.run<Conversation[]>('readonly', (s) => s.getAll());
    return all.sort((a, b) => b.updated - a.updated);
  }

  get(id: string): Promise<Conversation | undefined> {
    return this.run('readonly', (s) => s.get(id));
  }

  async put(c: Conversation): Promise<void> {
    await this.run('readwrite', (s) => s.put(c));
  }

  async remove(id: string): Promise<void> {
    await this.run('readwrite', (s) => s.delete(id));
  }

  private async run<T>(mode: IDBTransactionMode, op: (s: IDBObjectStore) => IDBRequest): Promise<T> {
    const db = await this.db;
    return new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = op(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req.result as T);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }
}

export function newConversation(system = ''): Conversation {
  const now = Date.now();
  const id = `${now.toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  return { id, title: 'New conversation', created: now, updated: now, system, messages: [] };
}

export function titleFrom(text: string): string {
  const line = text.trim().split('\n')[0] ?? '';
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || 'New conversation';
}

// A JSON file the user can keep or import elsewhere.
export function exportConversation(c: Conversation): void {
  const data = {
    format: 'tandem-conversation',
    version: 1,
    title: c.title,
    created: new Date(c.created).toISOString(),
    updated: new Date(c.updated).toISOString(),
    system: c.system,
    messages: c.messages.map((m) => ({ role: m.role, content: m.content, ...(m.stats ? { stats: m.stats } : {}) })),
  };
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `${c.title.replace(/[^\w.-]+/g, '_').slice(0, 40) || 'conversation'}.json`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
