#!/usr/bin/env python3
"""Checks a screenshot of camcast-view showing camcast's test pattern (.ci/view-check).

  screen_check.py colours SHOT.png X Y W H
      The window's area shows the test pattern: each of its colour bars (white, yellow, cyan,
      green, magenta, red, blue, black) covers a real share of it.
  screen_check.py moving A.png B.png X Y W H
      The frame-counter corner (the pattern's top-left, white 7-segment digits on black)
      shows lit digits in both shots, and they differ: the picture is live.

X Y W H is the window's geometry on the screen (xdotool getwindowgeometry).
"""
import sys

from PIL import Image

# The test pattern's bars in RGB (BT.601 limited range, as decoded: src/source/pattern.rs).
BARS = {
    "white": (235, 235, 235),
    "yellow": (235, 235, 16),
    "cyan": (16, 235, 235),
    "green": (16, 235, 16),
    "magenta": (235, 16, 235),
    "red": (235, 16, 16),
    "blue": (16, 16, 235),
    "black": (16, 16, 16),
}
# A pixel belongs to a bar colour when each channel is within this of it (JPEG and scaling
# blur the edges; the bars' flat insides are well within).
TOLERANCE = 48
# Each bar is 1/8 of the width; the number plate and the box cover some. Require a third.
MIN_SHARE = 1 / 8 / 3


def crop(path, x, y, w, h):
    return Image.open(path).convert("RGB").crop((x, y, x + w, y + h))


def classify(pixel):
    for name, ref in BARS.items():
        if all(abs(a - b) <= TOLERANCE for a, b in zip(pixel, ref)):
            return name
    return None


def shares(img):
    counts = {}
    pixels = list(img.getdata())
    for p in pixels:
        name = classify(p)
        counts[name] = counts.get(name, 0) + 1
    return {k: v / len(pixels) for k, v in counts.items()}


def colours(path, x, y, w, h):
    s = shares(crop(path, x, y, w, h))
    report = ", ".join(f"{k} {s.get(k, 0):.1%}" for k in BARS)
    print(f"{path}: {report}, other {s.get(None, 0):.1%}")
    missing = [k for k in BARS if s.get(k, 0) < MIN_SHARE]
    if missing:
        sys.exit(f"{path}: test pattern colours missing or too rare: {', '.join(missing)}")


def counter_region(path, x, y, w, h):
    # Digits sit in the top-left 40% x 16% of the picture (6 digits of the plate).
    return crop(path, x, y, int(w * 0.40), int(h * 0.16))


def moving(a, b, x, y, w, h):
    ra, rb = counter_region(a, x, y, w, h), counter_region(b, x, y, w, h)
    for path, r in ((a, ra), (b, rb)):
        s = shares(r)
        if s.get("white", 0) < 0.05 or s.get("black", 0) < 0.3:
            sys.exit(f"{path}: no lit digits on a dark plate in the counter corner: {s}")
    pa, pb = list(ra.getdata()), list(rb.getdata())
    changed = sum(1 for p, q in zip(pa, pb) if max(abs(i - j) for i, j in zip(p, q)) > 64)
    share = changed / len(pa)
    print(f"counter corner: {share:.1%} of pixels changed between {a} and {b}")
    if share < 0.005:
        sys.exit("the frame counter did not change: the picture is not live")


def main():
    args = sys.argv[1:]
    if len(args) == 6 and args[0] == "colours":
        colours(args[1], *map(int, args[2:]))
    elif len(args) == 7 and args[0] == "moving":
        moving(args[1], args[2], *map(int, args[3:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
