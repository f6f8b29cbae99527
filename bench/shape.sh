#!/bin/bash
# The code-shape targets of issue 12, checkable: functions over 100 lines, production files
# over 700 lines (production = the lines before a file's `#[cfg(test)]` `mod tests`), and
# imports of `commands` from outside `commands/` and `main.rs`. Also: library modules that
# import `crate::cli`, and `Result<_, String>` outside `cli.rs`.
#   bench/shape.sh            # from the repository root; no dependencies beyond bash and awk
# Function lengths rely on rustfmt's layout: a function ends at the first `}` line with the
# `fn` line's indentation. Files that are mostly a data table are listed with "(table)" when
# their name is in TABLES below; they are exempt from the file-size target.
set -euo pipefail
cd "$(dirname "$0")/.."
FN_MAX=${FN_MAX:-100}
FILE_MAX=${FILE_MAX:-700}
TABLES=${TABLES:-"src/gpu/products.rs src/engine/tables"}

files=$(find src -name "*.rs" ! -name tests.rs | sort)  # tests.rs: a `#[cfg(test)] mod tests;` file

# Production lines of one file: up to the first `#[cfg(test)]` that is followed by `mod`.
prod_lines() {
  awk '/^#\[cfg\(test\)\]/ { at = NR; getline nxt; if (nxt ~ /^(pub(\([a-z]+\))? )?mod /) { print at - 1; found = 1; exit } }
       END { if (!found) print NR }' "$1"
}

is_table() {
  local f=$1 t
  for t in $TABLES; do [[ $f == "$t" || $f == "$t"/* ]] && return 0; done
  return 1
}

echo "## Functions over $FN_MAX lines (production code)"
n=0
for f in $files; do
  limit=$(prod_lines "$f")
  out=$(awk -v max="$FN_MAX" -v limit="$limit" -v file="$f" '
    NR > limit { exit }
    {
      line = $0
      if (open) {
        if (line == indent "}" || line == indent "};" || line == indent "},") {
          len = NR - start + 1
          if (len > max) printf "%5d  %s:%d  %s\n", len, file, start, name
          open = 0
        }
        next
      }
      if (match(line, /^ *((pub(\([a-z:]+\))? )?(const )?(async )?(unsafe )?(extern "[A-Za-z]+" )?)fn [A-Za-z_][A-Za-z0-9_]*/)) {
        sig = substr(line, RSTART, RLENGTH)
        match(line, /^ */); indent = substr(line, 1, RLENGTH)
        sub(/.*fn /, "", sig); name = sig; start = NR
        # Find the end of the signature: `{` opens a body, `;` ends a declaration.
        s = line; ln = NR
        while (s !~ /\{ *$/ && s !~ /; *$/ && s !~ /\} *$/) { if ((getline s) <= 0) exit; ln++ }
        if (s ~ /\{ *$/) open = 1
      }
    }' "$f")
  if [[ -n $out ]]; then echo "$out"; n=$((n + $(wc -l <<<"$out"))); fi
done | sort -rn
echo

echo "## Production files over $FILE_MAX lines"
for f in $files; do
  p=$(prod_lines "$f")
  if (( p > FILE_MAX )); then
    if is_table "$f"; then printf "%5d  %s (table, exempt)\n" "$p" "$f"; else printf "%5d  %s\n" "$p" "$f"; fi
  fi
done | sort -rn
echo

echo "## Imports of commands outside commands/ and main.rs"
grep -rnE "(crate|aim_engine)::commands|^ *use (super::)+commands" src --include=*.rs |
  grep -vE "^src/commands/|^src/main.rs:" || echo "(none)"
echo

echo "## Library modules importing crate::cli"
grep -rn "crate::cli" src --include=*.rs | grep -vE "^src/commands|^src/cli.rs|^src/main.rs" || echo "(none)"
echo

echo "## Result<_, String> outside cli.rs (leaf parsers may stay)"
grep -rnE "Result<.*, ?String>" src --include=*.rs | grep -v "^src/cli.rs:" || echo "(none)"
