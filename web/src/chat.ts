// The chat view: conversation list, streamed replies rendered as Markdown,
// stop / regenerate / edit-and-resend, a per-conversation system prompt.
import type { App } from './app';
import type { DoneEvent } from './connection';
import { clear, h } from './dom';
import { errorCard } from './error_card';
import type { ApiErrorInfo } from './errors';
import { renderMarkdown } from './markdown';
import { toParams } from './settings';
import { exportConversation, newConversation, titleFrom, type ChatMessage, type Conversation } from './store';

interface Streaming {
  requestId: string | null;
  message: ChatMessage;
  contentEl: HTMLElement;
  metaEl: HTMLElement;
  renderQueued: boolean;
}

export class ChatView {
  readonly el: HTMLElement;
  private listEl = h('ul', { class: 'conv-list', 'aria-label': 'Conversations' });
  private messagesEl = h('div', { class: 'messages', role: 'log', 'aria-live': 'polite' });
  private titleEl = h('h2', { class: 'chat-title', text: 'New conversation' });
  private systemEl = h('textarea', { class: 'system-prompt', rows: 3, placeholder: 'System prompt (optional), e.g. "You answer briefly."' });
  private systemBox: HTMLElement;
  private input = h('textarea', { class: 'composer-input', rows: 2, placeholder: 'Message Tandem…  (Enter to send, Shift+Enter for a new line)', 'aria-label': 'Message' });
  private sendButton = h('button', { class: 'primary send', type: 'submit', text: 'Send' });
  private sidebar: HTMLElement;
  private conv: Conversation | null = null;
  private streaming: Streaming | null = null;

  constructor(private app: App) {
    this.sidebar = h(
      'aside',
      { class: 'sidebar' },
      h('button', { class: 'primary new-chat', type: 'button', text: '+ New chat', onclick: () => void this.open(null) }),
      this.listEl,
    );
    this.systemBox = h('div', { class: 'system-box', hidden: true }, h('label', { text: 'System prompt' }), this.systemEl);
    this.systemEl.addEventListener('change', () => void this.saveSystem());
    const systemToggle = h('button', {
      class: 'ghost',
      type: 'button',
      text: 'System prompt',
      title: 'Show or hide the system prompt',
      onclick: () => {
        this.systemBox.hidden = !this.systemBox.hidden;
        if (!this.systemBox.hidden) this.systemEl.focus();
      },
    });
    const sidebarToggle = h('button', {
      class: 'ghost sidebar-toggle',
      type: 'button',
      text: '☰',
      title: 'Conversations',
      'aria-label': 'Conversations',
      onclick: () => this.el.classList.toggle('sidebar-open'),
    });
    const form = h('form', { class: 'composer' }, this.input, this.sendButton);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (this.streaming) this.stop();
      else void this.send();
    });
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        if (!this.streaming) void this.send();
      }
    });
    this.el = h(
      'section',
      { class: 'view chat-view' },
      this.sidebar,
      h(
        'div',
        { class: 'chat-main' },
        h('div', { class: 'chat-toolbar' }, sidebarToggle, this.titleEl, systemToggle),
        this.systemBox,
        this.messagesEl,
        form,
      ),
    );
    this.app.conn.state.subscribe(() => {
      this.updateComposer();
      if (!this.conv?.messages.length) this.renderMessages(); // the empty view names the model
    });
  }

  async init(): Promise<void> {
    const all = await this.app.store.list();
    const last = localStorage.getItem('tandem.lastConversation');
    await this.open(all.find((c) => c.id === last) ?? null);
  }

  focus(): void {
    this.input.focus();
  }

  private async open(conv: Conversation | null): Promise<void> {
    if (this.streaming) this.stop();
    this.conv = conv;
    if (conv) localStorage.setItem('tandem.lastConversation', conv.id);
    else localStorage.removeItem('tandem.lastConversation');
    this.el.classList.remove('sidebar-open');
    this.systemEl.value = conv?.system ?? '';
    this.systemBox.hidden = !conv?.system;
    this.renderMessages();
    await this.renderList();
    this.input.focus();
  }

  private async renderList(): Promise<void> {
    const all = await this.app.store.list();
    clear(this.listEl);
    if (!all.length) this.listEl.appendChild(h('li', { class: 'conv-empty', text: 'No conversations yet.' }));
    for (const c of all) this.listEl.appendChild(this.listItem(c));
    this.titleEl.textContent = this.conv?.title ?? 'New conversation';
  }

  private listItem(c: Conversation): HTMLElement {
    const title = h('button', { class: 'conv-title', type: 'button', text: c.title, title: c.title });
    title.addEventListener('click', async () => void this.open((await this.app.store.get(c.id)) ?? null));
    const rename = h('button', { class: 'icon', type: 'button', title: 'Rename', 'aria-label': 'Rename', text: '✎' });
    rename.addEventListener('click', () => {
      const input = h('input', { class: 'conv-rename', value: c.title, 'aria-label': 'New name' });
      const commit = async () => {
        const name = input.value.trim();
        if (name && name !== c.title) {
          c.title = name;
          await this.app.store.put(c);
          if (this.conv?.id === c.id) this.conv.title = name;
        }
        await this.renderList();
      };
      input.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') void commit();
        if (e.key === 'Escape') void this.renderList();
      });
      input.addEventListener('blur', () => void commit());
      title.replaceWith(input);
      input.focus();
      input.select();
    });
    const exportButton = h('button', { class: 'icon', type: 'button', title: 'Export as JSON', 'aria-label': 'Export', text: '⤓' });
    exportButton.addEventListener('click', async () => {
      const full = await this.app.store.get(c.id);
      if (full) exportConversation(full);
    });
    const del = h('button', { class: 'icon danger', type: 'button', title: 'Delete', 'aria-label': 'Delete', text: '✕' });
    let armed = false;
    del.addEventListener('click', async () => {
      if (!armed) {
        armed = true;
        del.textContent = 'Delete?';
        del.classList.add('armed');
        window.setTimeout(() => {
          armed = false;
          del.textContent = '✕';
          del.classList.remove('armed');
        }, 3000);
        return;
      }
      await this.app.store.remove(c.id);
      if (this.conv?.id === c.id) await this.open(null);
      else await this.renderList();
    });
    return h(
      'li',
      { class: `conv${this.conv?.id === c.id ? ' active' : ''}`, 'data-id': c.id },
      title,
      h('span', { class: 'conv-actions' }, rename, exportButton, del),
    );
  }

  private renderMessages(): void {
    clear(this.messagesEl);
    const messages = this.conv?.messages ?? [];
    if (!messages.length) {
      const model = this.app.conn.state.value.model;
      this.messagesEl.appendChild(
        h(
          'div',
          { class: 'empty-chat' },
          h('h3', { text: 'Start a conversation' }),
          h('p', { text: model ? `Talking to ${model}.` : 'Waiting for the server…' }),
          h('p', { class: 'muted', text: 'Base models (like the demo model) answer best in Completion mode.' }),
        ),
      );
    }
    messages.forEach((m, k) => this.messagesEl.appendChild(this.messageNode(m, k, messages.length)));
    this.scrollToEnd(true);
  }

  private messageNode(m: ChatMessage, index: number, count: number): HTMLElement {
    const content = h('div', { class: 'content' });
    if (m.role === 'assistant') content.appendChild(renderMarkdown(m.content));
    else content.textContent = m.content;
    const meta = h('div', { class: 'meta' });
    this.fillMeta(meta, m);
    const actions = h('div', { class: 'actions' });
    const isLast = index === count - 1;
    if (m.role === 'user') {
      actions.appendChild(h('button', { class: 'ghost small', type: 'button', text: 'Edit', onclick: () => this.edit(index, node, content) }));
    } else {
      actions.appendChild(
        h('button', { class: 'ghost small', type: 'button', text: 'Copy', onclick: () => void navigator.clipboard?.writeText(m.content) }),
      );
      if (isLast) actions.appendChild(h('button', { class: 'ghost small', type: 'button', text: 'Regenerate', onclick: () => void this.regenerate() }));
    }
    const node = h(
      'article',
      { class: `message ${m.role}`, 'data-role': m.role },
      h('div', { class: 'role', text: m.role === 'user' ? 'You' : 'Tandem' }),
      content,
      m.error ? errorCard(m.error) : null,
      meta,
      actions,
    );
    return node;
  }

  private fillMeta(meta: HTMLElement, m: ChatMessage): void {
    const s = m.stats;
    if (!s) {
      meta.textContent = '';
      return;
    }
    const parts: string[] = [];
    if (s.completion_tokens !== undefined) parts.push(`${s.completion_tokens} tokens`);
    if (s.tokens_per_s) parts.push(`${s.tokens_per_s.toFixed(1)} tok/s`);
    if (s.ttft_ms !== undefined) parts.push(`TTFT ${s.ttft_ms.toFixed(0)} ms`);
    if (s.finish_reason === 'cancelled') parts.push('stopped');
    else if (s.finish_reason === 'length') parts.push('hit max tokens');
    else if (s.finish_reason === 'timeout') parts.push('timed out');
    meta.textContent = parts.join(' · ');
  }

  private edit(index: number, node: HTMLElement, content: HTMLElement): void {
    if (!this.conv || this.streaming) return;
    const area = h('textarea', { class: 'edit-input', rows: 3, value: this.conv.messages[index].content, 'aria-label': 'Edit message' });
    const save = h('button', { class: 'primary small', type: 'button', text: 'Save & send' });
    const cancel = h('button', { class: 'ghost small', type: 'button', text: 'Cancel', onclick: () => this.renderMessages() });
    save.addEventListener('click', async () => {
      const text = area.value.trim();
      if (!text || !this.conv) return;
      this.conv.messages = this.conv.messages.slice(0, index);
      this.conv.messages.push({ role: 'user', content: text });
      await this.persist();
      this.renderMessages();
      this.startReply();
    });
    const editor = h('div', { class: 'editor' }, area, h('div', { class: 'editor-actions' }, save, cancel));
    content.replaceWith(editor);
    node.querySelector('.actions')?.remove();
    area.focus();
  }

  private async send(): Promise<void> {
    const text = this.input.value.trim();
    if (!text || this.streaming) return;
    if (!this.app.conn.connected) {
      this.app.notify('Not connected to the server yet; your message is still in the box.');
      return;
    }
    if (!this.conv) {
      this.conv = newConversation(this.systemEl.value);
      this.conv.title = titleFrom(text);
    }
    this.input.value = '';
    this.conv.messages.push({ role: 'user', content: text });
    await this.persist();
    this.renderMessages();
    this.startReply();
  }

  private async regenerate(): Promise<void> {
    if (!this.conv || this.streaming) return;
    const last = this.conv.messages[this.conv.messages.length - 1];
    if (last?.role === 'assistant') this.conv.messages.pop();
    await this.persist();
    this.renderMessages();
    this.startReply();
  }

  // Appends an assistant message and streams the model's reply into it.
  private startReply(): void {
    const conv = this.conv;
    if (!conv) return;
    const prompt: { role: string; content: string }[] = [];
    if (conv.system.trim()) prompt.push({ role: 'system', content: conv.system.trim() });
    for (const m of conv.messages) {
      if (m.role === 'assistant' && m.error && !m.content) continue;
      prompt.push({ role: m.role, content: m.content });
    }
    const message: ChatMessage = { role: 'assistant', content: '' };
    conv.messages.push(message);
    const emptyHint = this.messagesEl.querySelector('.empty-chat');
    emptyHint?.remove();
    const node = this.messageNode(message, conv.messages.length - 1, conv.messages.length);
    node.classList.add('streaming');
    node.querySelector('.actions')?.replaceChildren();
    this.messagesEl.appendChild(node);
    const streaming: Streaming = {
      requestId: null,
      message,
      contentEl: node.querySelector('.content') as HTMLElement,
      metaEl: node.querySelector('.meta') as HTMLElement,
      renderQueued: false,
    };
    streaming.contentEl.appendChild(h('span', { class: 'cursor' }));
    this.streaming = streaming;
    this.updateComposer();
    this.scrollToEnd(true);
    const finish = async () => {
      if (this.streaming === streaming) this.streaming = null;
      if (this.conv === conv) {
        await this.persist();
        this.renderMessages();
      } else {
        conv.updated = Date.now();
        await this.app.store.put(conv);
      }
      this.updateComposer();
      // Replies finished in this view, for scripts that drive the page.
      this.el.dataset.replies = String(Number(this.el.dataset.replies ?? 0) + 1);
    };
    streaming.requestId = this.app.conn.generate(
      { messages: prompt, params: toParams(this.app.settings.value), conversation: conv.id },
      {
        onToken: (text) => {
          message.content += text;
          this.queueRender(streaming);
        },
        onDone: (done: DoneEvent) => {
          message.stats = {
            prompt_tokens: done.usage?.prompt_tokens,
            completion_tokens: done.usage?.completion_tokens,
            ttft_ms: done.timings?.ttft_ms,
            tokens_per_s: done.timings?.tokens_per_s,
            finish_reason: done.finish_reason,
          };
          void finish();
        },
        onError: (error: ApiErrorInfo) => {
          message.error = error;
          void finish();
        },
      },
    );
  }

  private queueRender(s: Streaming): void {
    if (s.renderQueued) return;
    s.renderQueued = true;
    requestAnimationFrame(() => {
      s.renderQueued = false;
      if (this.streaming !== s) return;
      const stick = this.nearBottom();
      s.contentEl.replaceChildren(renderMarkdown(s.message.content));
      const lastBlock = s.contentEl.lastElementChild ?? s.contentEl;
      (lastBlock.tagName === 'DIV' ? s.contentEl : lastBlock).appendChild(h('span', { class: 'cursor' }));
      if (stick) this.scrollToEnd(true);
    });
  }

  private stop(): void {
    const s = this.streaming;
    if (!s) return;
    if (s.requestId) this.app.conn.cancel(s.requestId);
  }

  private updateComposer(): void {
    const busy = this.streaming !== null;
    this.sendButton.textContent = busy ? 'Stop' : 'Send';
    this.sendButton.classList.toggle('stop', busy);
    this.sendButton.disabled = !busy && !this.app.conn.connected;
  }

  private async saveSystem(): Promise<void> {
    if (!this.conv) return;
    this.conv.system = this.systemEl.value;
    await this.persist();
  }

  private async persist(): Promise<void> {
    if (!this.conv) return;
    this.conv.updated = Date.now();
    // IndexedDB stores a structured clone; the live object keeps streaming.
    await this.app.store.put(JSON.parse(JSON.stringify(this.conv)) as Conversation);
    localStorage.setItem('tandem.lastConversation', this.conv.id);
    await this.renderList();
  }

  private nearBottom(): boolean {
    const el = this.messagesEl;
    return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  }

  private scrollToEnd(force: boolean): void {
    if (force || this.nearBottom()) this.messagesEl.scrollTop = this.messagesEl.scrollHeight;
  }
}
