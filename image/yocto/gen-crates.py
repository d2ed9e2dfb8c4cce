#!/usr/bin/env python3
"""Writes meta-camcast's camcast-crates.inc from the repository's Cargo.lock.

    image/yocto/gen-crates.py [--check]

One crate:// entry per crates.io package in Cargo.lock, with the checksum Cargo.lock holds, in
the format of OpenEmbedded's `bitbake -c update_crates` (cargo-update-recipe-crates.bbclass), so
either tool can refresh it. --check compares instead of writing and exits 1 when the file is
stale (image/yocto/check-layer.sh, in CI).
"""
import pathlib
import sys
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOCK = REPO / "Cargo.lock"
INC = HERE / "meta-camcast" / "recipes-camcast" / "camcast" / "camcast-crates.inc"
REGISTRY = "registry+https://github.com/rust-lang/crates.io-index"


def render(lock: dict) -> str:
    crates = [p for p in lock["package"] if p.get("source") == REGISTRY]
    others = [p for p in lock["package"] if p.get("source") not in (None, REGISTRY)]
    if others:
        # A git or other-registry dependency needs its own SRC_URI entry: refuse to guess.
        names = ", ".join(f"{p['name']} {p['version']} ({p['source']})" for p in others)
        raise SystemExit(f"gen-crates: not from crates.io, add by hand: {names}")
    missing = [f"{p['name']} {p['version']}" for p in crates if "checksum" not in p]
    if missing:
        raise SystemExit(f"gen-crates: no checksum in Cargo.lock for: {', '.join(missing)}")
    lines = [
        "# Generated from Cargo.lock by image/yocto/gen-crates.py: do not edit.",
        f"# {len(crates)} crates from crates.io.",
        "",
        'SRC_URI += " \\',
    ]
    lines += [f"    crate://crates.io/{p['name']}/{p['version']};name={p['name']}-{p['version']} \\" for p in crates]
    lines.append('"')
    lines.append("")
    lines += [f'SRC_URI[{p["name"]}-{p["version"]}.sha256sum] = "{p["checksum"]}"' for p in crates]
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render(tomllib.loads(LOCK.read_text()))
    if sys.argv[1:] == ["--check"]:
        if INC.exists() and INC.read_text() == text:
            print(f"{INC.relative_to(REPO)} matches Cargo.lock")
            return 0
        print(f"{INC.relative_to(REPO)} does not match Cargo.lock: run image/yocto/gen-crates.py")
        return 1
    if sys.argv[1:]:
        print(__doc__)
        return 2
    INC.write_text(text)
    print(f"wrote {INC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
