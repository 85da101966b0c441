#!/usr/bin/env python3
"""md_sh_blocks.py: the ```sh blocks of a Markdown file as one bash script, for the tests that
run documentation as written (runbooks.sh, readme_ops.sh).

Usage: md_sh_blocks.py FILE [--section TITLE] [--after PREFIX] [--hook CMD] [OLD NEW]...
  --section TITLE  only the blocks under the heading "## TITLE" (its ### subsections included),
                   up to the next "## " heading
  --after PREFIX   only the first block and the blocks whose preceding non-blank line starts
                   with PREFIX (e.g. "Rehearsal")
  --hook CMD       a line "CMD N" before block N (1, 2, ...), after its "=== block N ===" echo
  OLD NEW          literal substitutions, applied in order to the whole script
"""
import sys


def blocks(lines, after):
    """The selected ```sh blocks of lines, each a list of lines."""
    out, i, first, prev = [], 0, True, ""
    while i < len(lines):
        if lines[i].startswith("```sh"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if after is None or first or prev.startswith(after):
                out.append(lines[i + 1:j])
            first, i = False, j + 1
            continue
        if lines[i].strip():
            prev = lines[i].strip()
        i += 1
    return out


def section(lines, title):
    """The lines from "## title" up to the next "## " heading."""
    start = lines.index("## " + title)
    end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    return lines[start:end]


def main(argv):
    path, rest = argv[0], argv[1:]
    opts = {"--section": None, "--after": None, "--hook": None}
    while rest and rest[0] in opts:
        opts[rest[0]], rest = rest[1], rest[2:]
    if len(rest) % 2:
        sys.exit("md_sh_blocks.py: substitutions come in OLD NEW pairs")
    lines = open(path).read().split("\n")
    if opts["--section"]:
        lines = section(lines, opts["--section"])
    out = []
    for n, block in enumerate(blocks(lines, opts["--after"]), 1):
        out.append('echo "=== block %d ==="' % n)
        if opts["--hook"]:
            out.append("%s %d" % (opts["--hook"], n))
        out += block
    script = "\n".join(out)
    for old, new in zip(rest[::2], rest[1::2]):
        script = script.replace(old, new)
    print(script)


if __name__ == "__main__":
    main(sys.argv[1:])
