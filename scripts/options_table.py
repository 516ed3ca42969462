#!/usr/bin/env python3
"""Writes docs/options.md: every option imapferry-sync accepts (imapsync's and
imapferry's own), by group, with its status, from the one table in
sync/options.c. Run it after changing that table:

    scripts/options_table.py > docs/options.md
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = open(os.path.join(HERE, "..", "sync", "options.c"), encoding="utf-8").read()

groups_src = SRC[SRC.index("static const char *const group_names[]"):]
groups_src = groups_src[:groups_src.index("};")]
GROUPS = re.findall(r'"([^"]+)"', groups_src)
GROUP_IDS = re.findall(r"\tSY_G_([A-Z]+),", SRC[SRC.index("enum sy_opt_group"):])
STATUS = {"NOW": "works", "LATER": "accepted, not acted on yet",
          "NA": "accepted, not applicable here"}
ROW = re.compile(r'\[SY_OPT_\w+\] = \{"([^"]+)", (NULL|"[^"]*"), (T_\w+)\(([^)]*)\), '
                 r'(NULL|"[^"]*"), (NULL|"[^"]*"), (NOW|LATER|NA), SY_G_(\w+), '
                 r'(NULL|"[^"]*"), "((?:[^"\\]|\\.)*)"\}')


def main():
    rows = ROW.findall(SRC)
    if len(rows) < 200:
        sys.exit(f"only {len(rows)} options parsed: the table's shape changed")
    out = ["# imapferry-sync's options",
           "",
           "Generated from `sync/options.c` by `scripts/options_table.py`. imapsync's options "
           "keep imapsync's names and defaults; those marked *imapferry* are this project's own. "
           "`--x` and `--nox` are the two sides of a switch; see `imapferry-sync --help` for "
           "value types. Where imapferry-sync does better than imapsync, the README's "
           "\"Deliberate differences\" says how.",
           ""]
    by_group = {}
    for name, alias, typ, _field, default, _shown, status, group, _vtype, help_ in rows:
        by_group.setdefault(group, []).append((name, alias, typ, default, status, help_))
    counts = {}
    for gi, gid in enumerate(GROUP_IDS):
        if gid == "COUNT" or gid not in by_group:
            continue
        out += [f"## {GROUPS[gi]}", "", "| option | status | default | what |", "|---|---|---|---|"]
        for name, alias, typ, default, status, help_ in by_group[gid]:
            counts[status] = counts.get(status, 0) + 1
            opt = f"`--{'[no]' if typ == 'T_NEG' else ''}{name}`"
            if alias != "NULL":
                opt += f" (`--{alias.strip(chr(34))}`)"
            d = "" if default == "NULL" else default.strip('"')
            h = help_.replace("\\\"", "\"").replace("|", "\\|")
            out.append(f"| {opt} | {STATUS[status]} | {d} | {h} |")
        out.append("")
    total = sum(counts.values())
    out.insert(4, f"{total} options: {counts.get('NOW', 0)} work, "
                  f"{counts.get('LATER', 0)} are accepted but not acted on yet, "
                  f"{counts.get('NA', 0)} are accepted and do not apply (Perl internals, "
                  "imapsync's web and release machinery).\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
