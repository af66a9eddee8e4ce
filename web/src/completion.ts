// Completion mode: raw text in, continuation out. Base models (the demo
// model among them) answer best this way.
import type { App } from './app';
import { h } from './dom';
import { errorCard } from './error_card';
import { toParams } from './settings';

const PROMPT_KEY = 'tandem.completionPrompt';

export class CompletionView {
  readonly el: HTMLElement;
  private prompt = h('textarea', { class: 'completion-prompt', rows: 6, 'aria-label': 'Prompt' });
  private output = h('div', { class: 'completion-output', 'aria-live': 'polite' });
  private meta = h('div', { class: 'meta' });
  private runButton = h('button', { class: 'primary', type: 'button', text: 'Generate' });
  private continueButton = h('button', { class: 'ghost', type: 'button', text: 'Continue from here', disabled: true });
  private requestId: string | null = null;
  private busy = false;

  constructor(private app: App) {
    this.prompt.value = localStorage.getItem(PROMPT_KEY) ?? 'In the beginning';
    this.prompt.placeholder = 'Write the start of a text and let the model continue it.';
    this.prompt.addEventListener('input', () => localStorage.setItem(PROMPT_KEY, this.prompt.value));
    this.prompt.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) this.toggle();
    });
    this.runButton.addEventListener('click', () => this.toggle());
    this.continueButton.addEventListener('click', () => {
      this.prompt.value = this.output.textContent ?? '';
      localStorage.setItem(PROMPT_KEY, this.prompt.value);
      this.toggle();
    });
    this.el = h(
      'section',
      { class: 'view completion-view' },
      h(
        'div',
        { class: 'completion-main' },
        h('label', { class: 'field-label', text: 'Prompt' }),
        this.prompt,
        h('div', { class: 'row' }, this.runButton, this.continueButton, h('span', { class: 'muted hint', text: 'Ctrl+Enter to generate' })),
        h('label', { class: 'field-label', text: 'Output' }),
        this.output,
        this.meta,
      ),
    );
    this.app.conn.state.subscribe(() => this.updateButtons());
    this.updateButtons();
  }

  focus(): void {
    this.prompt.focus();
  }

  private toggle(): void {
    if (this.busy) {
      if (this.requestId) this.app.conn.cancel(this.requestId);
      return;
    }
    const prompt = this.prompt.value;
    if (!prompt) return;
    this.output.replaceChildren(h('span', { class: 'prompt-echo', text: prompt }));
    const generated = h('span', { class: 'generated' });
    this.output.appendChild(generated);
    this.meta.textContent = '';
    this.busy = true;
    this.updateButtons();
    const end = () => {
      this.busy = false;
      this.requestId = null;
      this.updateButtons();
    };
    this.requestId = this.app.conn.generate(
      { prompt, params: toParams(this.app.settings.value) },
      {
        onToken: (text) => {
          generated.appendChild(document.createTextNode(text));
          this.output.scrollTop = this.output.scrollHeight;
        },
        onDone: (done) => {
          const t = done.timings;
          const parts = [`${done.usage?.completion_tokens ?? 0} tokens`];
          if (t?.tokens_per_s) parts.push(`${t.tokens_per_s.toFixed(1)} tok/s`);
          if (t?.ttft_ms !== undefined) parts.push(`TTFT ${t.ttft_ms.toFixed(0)} ms`);
          const reasons: Record<string, string> = { cancelled: 'stopped', length: 'hit max tokens', stop: 'end of text', timeout: 'timed out' };
          parts.push(reasons[done.finish_reason] ?? done.finish_reason);
          this.meta.textContent = parts.join(' · ');
          end();
        },
        onError: (error) => {
          this.output.appendChild(errorCard(error));
          end();
        },
      },
    );
  }

  private updateButtons(): void {
    this.runButton.textContent = this.busy ? 'Stop' : 'Generate';
    this.runButton.classList.toggle('stop', this.busy);
    this.runButton.disabled = !this.busy && !this.app.conn.connected;
    this.continueButton.disabled = this.busy || !this.output.textContent;
  }
}
