/** Redis glob-style pattern (`*`, `?`, `[...]`, `\x`) as a RegExp, to tell which stored channels a subscription covers. */
export function patternToRegExp(pattern: string): RegExp {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") out += ".*";
    else if (c === "?") out += ".";
    else if (c === "\\" && i + 1 < pattern.length) out += escape(pattern[++i]);
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 1);
      if (end < 0) {
        out += "\\[";
        continue;
      }
      let body = pattern.slice(i + 1, end);
      if (body.startsWith("^")) body = `^${body.slice(1).replace(/[\\\]]/g, "\\$&")}`;
      else body = body.replace(/[\\\]^]/g, "\\$&");
      out += `[${body}]`;
      i = end;
    } else out += escape(c);
  }
  return new RegExp(`^${out}$`, "s");
}

const escape = (c: string): string => c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
