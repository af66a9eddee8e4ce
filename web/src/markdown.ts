// A small Markdown renderer that builds DOM nodes directly. Text only ever
// reaches the page through text nodes, and links keep only http(s)/mailto
// URLs, so model output cannot inject markup or script.
//
// Blocks: paragraphs, ATX headings, fenced code (``` or ~~~, unterminated
// fences render too, which matters while a reply streams in), block quotes,
// ordered and bullet lists (one level, continuation lines join the item),
// horizontal rules, pipe tables. Inline: `code`, **strong**, *em* / _em_,
// ~~strike~~, [links](url), autolinks, hard line breaks.
import { h } from './dom';
import { highlight } from './highlight';

export function renderMarkdown(source: string): DocumentFragment {
  const out = document.createDocumentFragment();
  const lines = source.replace(/\r\n?/g, '\n').split('\n');
  let i = 0;
  const isBlank = (s: string) => s.trim() === '';
  const fenceRe = /^ {0,3}(```+|~~~+)\s*([\w+#.-]*)/;
  const headingRe = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const hrRe = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
  const bulletRe = /^ {0,3}[-*+]\s+(.*)$/;
  const orderedRe = /^ {0,3}(\d{1,9})[.)]\s+(.*)$/;
  const quoteRe = /^ {0,3}>\s?(.*)$/;
  const tableSepRe = /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/;

  const startsBlock = (s: string) =>
    fenceRe.test(s) || headingRe.test(s) || hrRe.test(s) || bulletRe.test(s) || orderedRe.test(s) || quoteRe.test(s);

  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i++;
      continue;
    }
    const fence = fenceRe.exec(line);
    if (fence) {
      const marker = fence[1];
      const lang = fence[2].toLowerCase();
      const body: string[] = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith(marker)) body.push(lines[i++]);
      i++; // the closing fence (or the end of the text)
      out.appendChild(codeBlock(body.join('\n'), lang));
      continue;
    }
    const heading = headingRe.exec(line);
    if (heading) {
      const level = heading[1].length;
      const el = document.createElement(`h${Math.min(level + 2, 6)}`);
      el.appendChild(renderInline(heading[2]));
      out.appendChild(el);
      i++;
      continue;
    }
    if (hrRe.test(line)) {
      out.appendChild(h('hr'));
      i++;
      continue;
    }
    if (quoteRe.test(line)) {
      const body: string[] = [];
      while (i < lines.length && quoteRe.test(lines[i])) body.push(quoteRe.exec(lines[i++])![1]);
      const q = h('blockquote');
      q.appendChild(renderMarkdown(body.join('\n')));
      out.appendChild(q);
      continue;
    }
    if (bulletRe.test(line) || orderedRe.test(line)) {
      const ordered = !bulletRe.test(line);
      const re = ordered ? orderedRe : bulletRe;
      const list = ordered ? h('ol') : h('ul');
      if (ordered) {
        const first = Number(orderedRe.exec(line)![1]);
        if (first !== 1) list.setAttribute('start', String(first));
      }
      let item: string[] | null = null;
      const flush = () => {
        if (item) list.appendChild(h('li', {}, renderInline(item.join('\n'))));
      };
      while (i < lines.length) {
        const l = lines[i];
        const m = re.exec(l);
        if (m) {
          flush();
          item = [ordered ? m[2] : m[1]];
        } else if (!isBlank(l) && !startsBlock(l) && item) {
          item.push(l.trim());
        } else {
          break;
        }
        i++;
      }
      flush();
      out.appendChild(list);
      continue;
    }
    if (line.includes('|') && i + 1 < lines.length && tableSepRe.test(lines[i + 1])) {
      const header = splitRow(line);
      i += 2;
      const rows: string[][] = [];
      while (i < lines.length && lines[i].includes('|') && !isBlank(lines[i])) rows.push(splitRow(lines[i++]));
      const table = h(
        'table',
        {},
        h('thead', {}, h('tr', {}, ...header.map((c) => h('th', {}, renderInline(c))))),
        h('tbody', {}, ...rows.map((r) => h('tr', {}, ...header.map((_, k) => h('td', {}, renderInline(r[k] ?? '')))))),
      );
      out.appendChild(h('div', { class: 'table-wrap' }, table));
      continue;
    }
    const para: string[] = [];
    while (i < lines.length && !isBlank(lines[i]) && !(para.length && startsBlock(lines[i]))) para.push(lines[i++]);
    out.appendChild(h('p', {}, renderInline(para.join('\n'))));
  }
  return out;
}

function splitRow(line: string): string[] {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|')) s = s.slice(0, -1);
  return s.split('|').map((c) => c.trim());
}

function codeBlock(code: string, lang: string): HTMLElement {
  const codeEl = h('code');
  codeEl.appendChild(highlight(code, lang));
  const copy = h('button', { class: 'copy', type: 'button', title: 'Copy code', text: 'Copy' });
  copy.addEventListener('click', () => {
    void navigator.clipboard?.writeText(code).then(() => {
      copy.textContent = 'Copied';
      window.setTimeout(() => (copy.textContent = 'Copy'), 1200);
    });
  });
  return h('div', { class: 'code-block' }, h('div', { class: 'code-head' }, h('span', { text: lang || 'text' }), copy), h('pre', {}, codeEl));
}

export function safeUrl(raw: string): string | null {
  const url = raw.trim();
  if (/^(https?:|mailto:)/i.test(url)) return url;
  if (/^[/#?]/.test(url) && !url.startsWith('//')) return url;
  return null;
}

// Inline spans, in the order CommonMark gives them priority: code spans
// first (their content is literal), then links, then emphasis.
export function renderInline(text: string): DocumentFragment {
  const out = document.createDocumentFragment();
  let buf = '';
  const flushText = () => {
    if (!buf) return;
    const parts = buf.split(/ {2,}\n|\\\n/);
    parts.forEach((p, k) => {
      if (k) out.appendChild(h('br'));
      out.appendChild(document.createTextNode(p));
    });
    buf = '';
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length && /[\\`*_{}[\]()#+\-.!|~<>]/.test(text[i + 1])) {
      buf += text[i + 1];
      i += 2;
      continue;
    }
    if (c === '`') {
      const run = /^`+/.exec(text.slice(i))![0];
      const end = text.indexOf(run, i + run.length);
      if (end > 0) {
        flushText();
        out.appendChild(h('code', { text: text.slice(i + run.length, end).replace(/^ (.*) $/s, '$1') }));
        i = end + run.length;
        continue;
      }
    }
    if (c === '[') {
      const m = /^\[([^\]\n]*)\]\(([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+"[^"]*")?\)/.exec(text.slice(i));
      if (m) {
        const href = safeUrl(m[2]);
        flushText();
        if (href) {
          const a = h('a', { href, target: '_blank', rel: 'noopener noreferrer' });
          a.appendChild(renderInline(m[1]));
          out.appendChild(a);
        } else {
          out.appendChild(renderInline(m[1]));
        }
        i += m[0].length;
        continue;
      }
    }
    if (c === 'h' && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const m = /^https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"]/.exec(text.slice(i));
      if (m) {
        flushText();
        out.appendChild(h('a', { href: m[0], target: '_blank', rel: 'noopener noreferrer', text: m[0] }));
        i += m[0].length;
        continue;
      }
    }
    if (c === '*' || c === '_' || c === '~') {
      const strong = text.startsWith(c + c, i);
      if (c === '~' && !strong) {
        buf += c;
        i++;
        continue;
      }
      const delim = strong ? c + c : c;
      const after = text[i + delim.length];
      const before = i > 0 ? text[i - 1] : ' ';
      // `_` inside words (snake_case) is not emphasis.
      const canOpen = after !== undefined && !/\s/.test(after) && !(c === '_' && /\w/.test(before));
      if (canOpen) {
        let end = text.indexOf(delim, i + delim.length);
        while (end > 0 && (/\s/.test(text[end - 1]) || (c === '_' && /\w/.test(text[end + delim.length] ?? '')))) {
          end = text.indexOf(delim, end + 1);
        }
        if (end > i + delim.length) {
          flushText();
          const el = document.createElement(c === '~' ? 's' : strong ? 'strong' : 'em');
          el.appendChild(renderInline(text.slice(i + delim.length, end)));
          out.appendChild(el);
          i = end + delim.length;
          continue;
        }
      }
    }
    buf += c;
    i++;
  }
  flushText();
  return out;
}
