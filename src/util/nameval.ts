/**
 * split_nameval() (src/util/split_nameval.c): "name = value", the name
 * running to the first blank or '=', blanks around '=' and at the end of the
 * value removed (the value may contain '=').
 */
import { isSpace } from './braces.js';

export type NameVal = { name: string; value: string } | { error: string };

export function splitNameVal(buf: string): NameVal {
  const n = buf.length;
  let np = 0;
  while (np < n && isSpace(buf[np])) np++;
  if (np >= n || buf[np] === '=') return { error: 'missing attribute name' };
  let ep = np;
  while (ep < n && !isSpace(buf[ep]) && buf[ep] !== '=') ep++;
  let cp = ep;
  while (cp < n && isSpace(buf[cp])) cp++;
  if (buf[cp] !== '=') return { error: "missing '=' after attribute name" };
  let vp = cp + 1;
  while (vp < n && isSpace(buf[vp])) vp++;
  let ve = n;
  while (ve > vp && isSpace(buf[ve - 1])) ve--;
  return { name: buf.slice(np, ep), value: buf.slice(vp, ve) };
}
