/**
 * Brace and token helpers with Postfix's semantics (balpar, mystrtokq,
 * extpar, split_qnameval in src/util/). Strings are byte strings.
 */

/** ISSPACE in the C locale: SP HT LF VT FF CR. */
export function isSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r';
}


export function trimSpace(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isSpace(s[a])) a++;
  while (b > a && isSpace(s[b - 1])) b--;
  return s.slice(a, b);
}

/** Length of the balanced group at the start of s (0 if s does not start with open or is unbalanced). */
export function balpar(s: string, open = '{', close = '}'): number {
  if (s[0] !== open) return 0;
  let level = 1;
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if (c === close) {
      if (--level === 0) return i + 1;
    } else if (c === open) {
      level++;
    }
  }
  return 0;
}

/**
 * Split s into tokens at separators outside balanced braces (mystrtokq).
 * Braces stay in the tokens. Separators default to ", \t\r\n".
 */
export function tokenizeQ(s: string, sep = ', \t\r\n', open = '{', close = '}'): string[] {
  const out: string[] = [];
  let i = 0;
  const n = s.length;
  for (;;) {
    while (i < n && sep.includes(s[i])) i++;
    if (i >= n) break;
    const start = i;
    let level = 0;
    for (; i < n; i++) {
      const c = s[i];
      if (c === open) level++;
      else if (level > 0 && c === close) level--;
      else if (level === 0 && sep.includes(c)) break;
    }
    out.push(s.slice(start, i));
    if (i < n) i++;
  }
  return out;
}

/** Simple tokenizer (mystrtok): split at any separator, no brace awareness. */
export function tokenize(s: string, sep = ', \t\r\n'): string[] {
  const out: string[] = [];
  let tok = '';
  for (const c of s) {
    if (sep.includes(c)) {
      if (tok) out.push(tok);
      tok = '';
    } else tok += c;
  }
  if (tok) out.push(tok);
  return out;
}

export interface ExtparResult {
  /** inner text (or the best-effort remainder on error) */
  text: string;
  /** error message as Postfix words it, or undefined */
  error?: string;
}

/**
 * Strip one level of enclosing braces (extpar). With strip, blanks around the
 * inner text are removed.
 */
export function extpar(s: string, strip: boolean, open = '{', close = '}'): ExtparResult {
  let text: string;
  let error: string | undefined;
  if (s[0] !== open) {
    error = `no '${open}' at start of text in "${s}"`;
    text = s;
  } else {
    const len = balpar(s, open, close);
    if (len === 0) {
      error = `missing '${close}' in "${s}"`;
      text = s.slice(1);
    } else {
      if (len !== s.length) error = `syntax error after '${close}' in "${s}"`;
      text = s.slice(1, len - 1);
    }
  }
  if (strip) text = trimSpace(text);
  return error === undefined ? { text } : { text, error };
}

export type QNameVal = { key: string; value: string } | { error: string };

/** Parse `key = value` where the key may be quoted (split_qnameval). Quotes stay in the key. */
export function splitQNameVal(buf: string): QNameVal {
  let i = 0;
  const n = buf.length;
  while (i < n && isSpace(buf[i])) i++;
  if (i >= n) return { error: 'no key found; expected format: key = value' };
  const keyStart = i;
  let inQuotes = false;
  for (; i < n; i++) {
    const c = buf[i];
    if (c === '\\') {
      if (++i >= n) break;
    } else if (isSpace(c) || c === '=') {
      if (!inQuotes) break;
    } else if (c === '"') {
      inQuotes = !inQuotes;
    }
  }
  if (inQuotes) return { error: `unbalanced '"'` };
  const keyEnd = Math.min(i, n);
  let v = keyEnd;
  while (v < n && isSpace(buf[v])) v++;
  if (buf[v] !== '=') return { error: "missing '=' after attribute name" };
  v++;
  while (v < n && isSpace(buf[v])) v++;
  let e = n;
  while (e > v && isSpace(buf[e - 1])) e--;
  return { key: buf.slice(keyStart, keyEnd), value: buf.slice(v, e) };
}
