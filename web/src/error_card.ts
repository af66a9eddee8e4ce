import { h } from './dom';
import { describeError, type ApiErrorInfo } from './errors';

// A readable error: what happened, what to do, and the server's own words.
export function errorCard(error: ApiErrorInfo): HTMLElement {
  const { title, detail } = describeError(error);
  return h(
    'div',
    { class: 'error-card', role: 'alert', 'data-code': error.code },
    h('strong', { text: title }),
    detail ? h('div', { class: 'error-detail', text: detail }) : null,
    h('div', { class: 'error-code', text: error.code }),
  );
}
