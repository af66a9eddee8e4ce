#!/usr/bin/env bash
# Assembles the demo model's training text from Debian packages into
# .demo_corpus/ (ignored by git; the text itself never enters the repository):
#   - the King James Bible (bible-kjv-text, public domain), one chapter per document;
#   - the fortune cookie collections (fortunes, fortunes-min), one fortune per document.
# Documents are separated by a line holding only "<|doc|>".
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v bible >/dev/null || [ ! -d /usr/share/games/fortunes ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bible-kjv bible-kjv-text fortunes fortunes-min
fi
mkdir -p .demo_corpus
out=.demo_corpus/corpus.txt
: > "$out"
# Verses come as "Ge1:1 text"; a chapter becomes one paragraph.
bible -f Gen1:1-Rev22:21 | awk '
  match($0, /^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ /) {
    ref = substr($0, 1, RLENGTH - 1); text = substr($0, RLENGTH + 1)
    split(ref, parts, ":"); chapter = parts[1]
    if (chapter != last && last != "") { print line; print "<|doc|>"; line = "" }
    last = chapter
    line = (line == "" ? text : line " " text)
  }
  END { if (line != "") { print line; print "<|doc|>" } }' >> "$out"
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] || continue
  iconv -f utf-8 -t utf-8 -c "$f" | sed 's/^%$/<|doc|>/' >> "$out"
  echo "<|doc|>" >> "$out"
done
echo "corpus: $(wc -c < "$out") bytes, $(grep -c '^<|doc|>$' "$out") documents -> $out"
