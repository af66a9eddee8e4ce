// What every view shares: the connection, the conversation store, the
// sampling settings and a way to show a short notice.
import type { Connection } from './connection';
import type { Signal } from './dom';
import type { SamplingSettings } from './settings';
import type { ConversationStore } from './store';

export interface App {
  conn: Connection;
  store: ConversationStore;
  settings: Signal<SamplingSettings>;
  notify(text: string): void;
}
