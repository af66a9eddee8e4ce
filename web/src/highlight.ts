// A small lexical highlighter for code blocks: comments, strings, numbers,
// keywords and types for the C family, Python, Rust, Go, JS/TS and shell.
// It returns text nodes inside <span class="tok-*">, never markup.
const keywordList = `
  if else for while do switch case default break continue return goto try catch finally throw throws
  class struct enum union interface trait impl type typedef namespace using module package import export from as
  public private protected static const constexpr consteval final override virtual extern inline mutable volatile
  new delete sizeof typeof instanceof in of is not and or let var val fn func def lambda async await yield
  with pass raise except elif global nonlocal assert del match where mut ref pub crate self super this
  true false null nullptr None True False nil undefined void auto template typename operator friend
  go defer chan select range map struct interface fallthrough echo then fi esac done function local readonly
`;
const typeList = `
  int char bool float double long short unsigned signed size_t int8_t int16_t int32_t int64_t uint8_t uint16_t
  uint32_t uint64_t i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 usize isize str String string number boolean any unknown
  never object Vec Option Result Box std vector
`;
const keywords = new Set(keywordList.split(/\s+/).filter(Boolean));
const types = new Set(typeList.split(/\s+/).filter(Boolean));

const hashComment = new Set(['python', 'py', 'sh', 'bash', 'shell', 'zsh', 'ruby', 'rb', 'yaml', 'yml', 'toml', 'perl', 'r', 'makefile', 'cmake', 'dockerfile']);

// One token: [class or '', text].
type Token = [string, string];

export function tokenize(code: string, lang: string): Token[] {
  const tokens: Token[] = [];
  const hashComments = hashComment.has(lang);
  const slashComments = !hashComments || lang === '';
  let i = 0;
  let plain = '';
  const push = (cls: string, text: string) => {
    if (plain) {
      tokens.push(['', plain]);
      plain = '';
    }
    tokens.push([cls, text]);
  };
  while (i < code.length) {
    const rest = code.slice(i);
    let m: RegExpExecArray | null = null;
    if (slashComments && (m = /^\/\/[^\n]*/.exec(rest))) push('comment', m[0]);
    else if (slashComments && (m = /^\/\*[\s\S]*?(\*\/|$)/.exec(rest))) push('comment', m[0]);
    else if (hashComments && (m = /^#[^\n]*/.exec(rest))) push('comment', m[0]);
    else if ((m = /^("""[\s\S]*?("""|$)|'''[\s\S]*?('''|$))/.exec(rest))) push('string', m[0]);
    else if ((m = /^("(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|`(?:[^`\\]|\\.)*`?)/.exec(rest))) push('string', m[0]);
    else if ((m = /^(0x[\da-fA-F_]+|\d[\d_]*(\.\d+)?([eE][+-]?\d+)?)[a-zA-Z]*/.exec(rest)) && !/\w/.test(code[i - 1] ?? '')) push('number', m[0]);
    else if ((m = /^[A-Za-z_$][\w$]*/.exec(rest))) {
      const word = m[0];
      if (keywords.has(word)) push('keyword', word);
      else if (types.has(word)) push('type', word);
      else if (code[i + word.length] === '(') push('function', word);
      else plain += word;
    } else {
      plain += code[i];
      i++;
      continue;
    }
    i += m[0].length;
  }
  if (plain) tokens.push(['', plain]);
  return tokens;
}

export function highlight(code: string, lang: string): DocumentFragment {
  const out = document.createDocumentFragment();
  const plainLangs = new Set(['text', 'txt', 'plain', 'markdown', 'md']);
  if (plainLangs.has(lang)) {
    out.appendChild(document.createTextNode(code));
    return out;
  }
  for (const [cls, text] of tokenize(code, lang)) {
    if (!cls) {
      out.appendChild(document.createTextNode(text));
    } else {
      const span = document.createElement('span');
      span.className = `tok-${cls}`;
      span.textContent = text;
      out.appendChild(span);
    }
  }
  return out;
}
