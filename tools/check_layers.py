#!/usr/bin/env python3
"""The layering rule of engine/README.md, checked on the source text (ctest layers.*).

Every quoted #include in engine/, kernels/ and models/ must name a header of a layer the
including file's layer may use; the build enforces the same rule through per-layer include
roots, and this check also catches what the compiler cannot see (a header that is never
compiled on this machine, a relative "../" include, a file outside every layer).

Usage: check_layers.py [ROOT]   (ROOT: a source tree, default: this repository)
Exit 0 when every edge is allowed, 1 with one line per forbidden edge (file:line: message).
"""
import os
import re
import sys

# layer -> the layers its files may include (itself included). Order: lowest first.
LAYERS = {
    "engine/core": ["engine/core"],
    "kernels": ["kernels", "engine/core"],
    "engine/io": ["engine/io", "engine/core"],
    "engine/dynamics": ["engine/dynamics", "kernels", "engine/io", "engine/core"],
    "engine/autograd": ["engine/autograd", "engine/dynamics", "kernels", "engine/io",
                        "engine/core"],
    "engine/optim": ["engine/optim", "kernels", "engine/core"],
    "engine/scan": ["engine/scan", "engine/io", "engine/core"],
    "models": ["models", "engine/scan", "engine/autograd", "engine/optim", "engine/dynamics",
               "kernels", "engine/io", "engine/core"],
}
# Folders outside the library: they may include every layer, and no layer may include them.
APPS = ["tools", "tests", "bench"]
SOURCE_EXT = (".h", ".hpp", ".cuh", ".cpp", ".cc", ".cu")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def layer_of(rel):
    """The layer (or app folder) a repository-relative path belongs to, or None."""
    for name in sorted(LAYERS, key=len, reverse=True):
        if rel == name or rel.startswith(name + "/"):
            return name
    for app in APPS:
        if rel.startswith(app + "/"):
            return app
    return None


def check(root):
    errors = []
    for top in ["engine", "kernels", "models"]:
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for fname in sorted(files):
                if not fname.endswith(SOURCE_EXT):
                    continue
                path = os.path.join(dirpath, fname)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                mine = layer_of(rel)
                if mine is None:
                    errors.append(f"{rel}:1: not inside a layer folder ({', '.join(LAYERS)})")
                    continue
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for lineno, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        target = m.group(1)
                        if "/" not in target:  # a sibling include ("foo_math.h")
                            target = os.path.dirname(rel) + "/" + target
                        elif target.startswith("."):
                            errors.append(f"{rel}:{lineno}: relative include \"{m.group(1)}\" "
                                          "(name headers from the repository root)")
                            continue
                        theirs = layer_of(target)
                        if theirs is None:
                            continue  # not ours (a third-party header in quotes)
                        if theirs not in LAYERS.get(mine, []):
                            errors.append(f"{rel}:{lineno}: {mine} may not include {target} "
                                          f"({theirs}); {mine} may include "
                                          f"{', '.join(LAYERS[mine])}")
    return errors


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, "engine")):
        print(f"check_layers: {root}: no engine/ folder", file=sys.stderr)
        return 2
    errors = check(root)
    for e in errors:
        print(e)
    if errors:
        print(f"check_layers: {len(errors)} forbidden include(s) under {root}", file=sys.stderr)
        return 1
    print(f"check_layers: all includes under {root} follow the layers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
