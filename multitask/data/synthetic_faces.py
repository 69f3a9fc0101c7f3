"""Synthetic faces: one person drawn from a seed, rendered wearing a mask right, wrong or not at all.

    person, rng = person_identity(seed=0, split=0, index=3)        # split 0: training people, 1: eval people
    image = render(person, "incorrect", rng, width=96, height=128)  # HxWx3 uint8 RGB
    person, jpegs = person_images(0, 0, 3, width=96, height=128)    # {stem: JPEG bytes} for the 7 competition photos

Faces are OpenCV polygons in a face frame (unit = half the face width, y down), mapped to pixels by one pose transform,
so any size from 32x32 to 384x512 works. Each label has cues that are visible but noisy, so no single pixel decides:
mask = where a mask sits (over the nose / under the nose or on the chin / none); gender = hair length, jaw, brows, lips,
beard; age = hair greying, wrinkles, skin tone, all proportional to age in years (so 28-32 and 57-62 are ambiguous).
Everything is drawn from numpy Generators seeded by (seed, person), so a seed gives byte-identical files.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

STEMS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
STEM_MASK = {s: "wear" if s.startswith("mask") else "incorrect" if s == "incorrect_mask" else "not_wear" for s in STEMS}
RACES = ("Asian", "White", "Black")
RACE_P = (0.8, 0.12, 0.08)
FEMALE_P = 0.61                   # the competition's share
AGE_BIN_P = (0.47, 0.45, 0.08)    # <30, 30-59, >=60
JPEG_QUALITY = 92                 # fixed: same seed -> same bytes

SKIN = {"Asian": ((205, 160, 125), (245, 212, 180)), "White": ((225, 180, 150), (250, 222, 200)),
        "Black": ((95, 60, 40), (160, 110, 78))}                                               # RGB low..high
HAIR = {"Asian": ((22, 18, 16), (45, 32, 24), (70, 48, 30)), "White": ((55, 38, 24), (110, 72, 40), (175, 135, 80)),
        "Black": ((18, 14, 12), (35, 26, 20), (50, 36, 26))}
# surgical blue, pale blue, white, black, pink, grey, navy: mostly the light and dark ones, as in real photos
MASK_COLOURS = ((150, 190, 222), (172, 208, 232), (236, 236, 236), (30, 30, 34), (232, 182, 192), (140, 140, 146),
                (40, 52, 92))
MASK_COLOUR_P = (0.3, 0.15, 0.25, 0.15, 0.05, 0.05, 0.05)
GREY = np.array([200.0, 200.0, 204.0])


def _mix(a, b, t: float) -> np.ndarray:
    return np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t


def _ellipse(cx, cy, ax, ay, t0=0.0, t1=2 * math.pi, n=24) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)


# ----------------------------------------------------------------------------------------------------- one person
def _draw_age(rng: np.random.Generator) -> int:
    # bimodal like the competition (students and their parents); >=60 is mostly exactly 60 as in the real labels
    band = rng.choice(3, p=AGE_BIN_P)
    if band == 0:
        return int(min(29, rng.triangular(18, 21, 30)))
    if band == 1:
        return int(rng.integers(30, 60)) if rng.random() < 0.45 else int(min(59, rng.triangular(40, 55, 60)))
    return 60 if rng.random() < 0.75 else int(rng.integers(61, 71))


def _draw_person(rng: np.random.Generator) -> dict:
    """Identity: who the person is and what stays the same across their 7 photos."""
    female = rng.random() < FEMALE_P
    age = _draw_age(rng)
    race = RACES[rng.choice(len(RACES), p=RACE_P)]
    n = lambda mean, sd, lo, hi: float(np.clip(rng.normal(mean, sd), lo, hi))  # noqa: E731
    sex = lambda male, fem: fem if female else male                             # noqa: E731
    # age cues, each with its own noise: greying (a quarter dye their hair), wrinkles, sallower skin
    grey = n((age - 33) / 30, 0.2, 0, 1) * (0.15 if rng.random() < 0.25 else 1.0)
    wrinkle = n((age - 22) / 38, 0.18, 0, 1.1)
    skin = _mix(*SKIN[race], rng.random())
    skin = _mix(skin, skin * np.array([0.86, 0.8, 0.72]), n((age - 18) / 50, 0.25, 0, 1))
    hair = np.asarray(HAIR[race][rng.integers(len(HAIR[race]))], float) * rng.uniform(0.85, 1.15)
    # gender cues, none decisive alone: hair style, jaw, brows, eyelids, lips, neck, shoulders, beard
    styles = sex(["short", "buzz", "bob", "long"], ["long", "bob", "tied", "short"])
    style = rng.choice(styles, p=sex([0.74, 0.14, 0.08, 0.04], [0.62, 0.18, 0.14, 0.06]))
    lips = _mix(skin * 0.8, sex((165, 90, 90), (190, 50, 70)), sex(rng.uniform(0.15, 0.45), rng.uniform(0.35, 0.9)))
    bald = not female and age > 40 and rng.random() < (age - 40) / 45
    return dict(
        female=female, age=age, race=race, skin=skin, lips=lips, grey=grey, wrinkle=wrinkle, hair=hair, style=style,
        hairline=-0.8 - 0.35 * bald + n(0.12, 0.1, -0.05, 0.3) * (not bald), fringe=n(0, 0.1, -0.2, 0.25),
        volume=n(sex(0.03, 0.08), 0.04, 0, 0.2), hair_len=n(2.2, 0.3, 1.5, 3),
        face_w=n(1.0, 0.04, 0.9, 1.1), face_h=n(1.3, 0.05, 1.18, 1.45),
        jaw=n(sex(0.98, 0.87), 0.05, 0.75, 1.1), jaw_n=n(sex(2.7, 2.1), 0.25, 1.7, 3.4),
        brow=n(sex(0.075, 0.045), 0.014, 0.02, 0.12), lid=n(sex(0.022, 0.036), 0.006, 0.01, 0.06),
        neck=n(sex(0.48, 0.4), 0.04, 0.3, 0.6), shoulders=n(sex(2.4, 2.1), 0.15, 1.7, 2.8),
        beard=not female and rng.random() < 0.3, blush=n(sex(0.08, 0.25), 0.1, 0, 0.5) * (1 - grey / 2),
        eye_x=n(0.4, 0.03, 0.32, 0.48), eye_y=n(-0.15, 0.03, -0.25, -0.05),
        iris=_mix((60, 35, 20), (20, 12, 8), rng.random()),
        mouth_w=n(0.25, 0.03, 0.17, 0.33), mouth_y=n(0.68, 0.03, 0.6, 0.76),
        glasses=rng.random() < 0.15, earrings=female and rng.random() < 0.3, scarf=rng.random() < 0.1,
        clothes=rng.uniform(30, 230, 3), scarf_colour=rng.uniform(30, 230, 3), spots=rng.uniform(-1, 1, (12, 2)),
        designs=[_draw_mask_design(rng) for _ in range(rng.integers(1, 4))], background=_draw_room(rng),
    )


def _draw_mask_design(rng: np.random.Generator) -> dict:
    kind = rng.choice(["surgical", "kf94", "cloth"], p=[0.6, 0.2, 0.2])
    if kind == "cloth":
        colour = rng.uniform(20, 240, 3)
    else:
        colour = MASK_COLOURS[rng.choice(len(MASK_COLOURS), p=MASK_COLOUR_P)]
    pattern = rng.choice(["plain", "stripes", "dots"], p=[0.6, 0.2, 0.2]) if kind == "cloth" else "plain"
    return dict(kind=kind, colour=np.asarray(colour, float), pattern=pattern, accent=rng.uniform(20, 240, 3),
                bottom=rng.uniform(1.0, 1.08))


def _draw_room(rng: np.random.Generator) -> dict:
    base = _mix(rng.uniform(60, 235, 3), np.full(3, rng.uniform(80, 220)), 0.6)   # muted room colours
    clutter = [(rng.integers(3), rng.uniform(0, 1, 2), rng.uniform(0.05, 0.4, 2), rng.uniform(20, 240, 3))
               for _ in range(rng.integers(2, 8))]
    return dict(base=base, top=base * rng.uniform(0.7, 1.2), clutter=clutter)


# ----------------------------------------------------------------------------------------------------- drawing
class _Canvas:
    """Fills and strokes face-frame shapes on an RGB image through one pose (rotation, scale, translation)."""

    def __init__(self, image: np.ndarray, *, centre, unit: float, angle: float):
        self.image, self.unit = image, unit
        c, s = math.cos(angle), math.sin(angle)
        self.matrix = np.array([[c, -s], [s, c]]) * unit
        self.centre = np.asarray(centre, float)

    def _px(self, points) -> np.ndarray:
        return np.round((np.asarray(points, float) @ self.matrix.T + self.centre) * 16).astype(np.int32)

    def fill(self, points, colour) -> None:
        cv2.fillPoly(self.image, [self._px(points)], _rgb(colour), cv2.LINE_AA, 4)

    def lines(self, polylines, colour, width: float) -> None:
        thickness = max(1, int(round(width * self.unit)))
        cv2.polylines(self.image, [self._px(p) for p in polylines], False, _rgb(colour), thickness, cv2.LINE_AA, 4)


def _rgb(colour) -> tuple:
    return tuple(min(255.0, max(0.0, float(v))) for v in colour)


def _lower_half_width(p: dict, y, scale=1.0):
    """Half width of the lower face (superellipse jaw) at height y >= 0 in the face frame."""
    chin = p["face_h"] * scale
    t = np.clip(np.asarray(y, float) / chin, 0, 1)
    return p["jaw"] * p["face_w"] * scale * (1 - t ** p["jaw_n"]) ** (1 / p["jaw_n"])


def _face_outline(p: dict) -> np.ndarray:
    top = _ellipse(0, 0, p["face_w"], 1.35, math.pi, 2 * math.pi, 20)
    ys = np.linspace(0, p["face_h"], 14)
    right = np.stack([_lower_half_width(p, ys), ys], 1)
    return np.concatenate([top, right, (right * [-1, 1])[::-1][1:]])


def _draw_hair_back(cv: _Canvas, p: dict, colour) -> None:
    if p["style"] in ("long", "bob"):
        w, v = p["face_w"] * 1.12 + p["volume"], 1.45 + p["volume"]
        length = p["hair_len"] if p["style"] == "long" else 1.1
        top = _ellipse(0, 0, w, v, math.pi, 2 * math.pi, 16)
        sides = [(w + 0.05, 0.4), (w + 0.2, length), (0.7, length + 0.1), (-0.7, length + 0.1), (-w - 0.2, length),
                 (-w - 0.05, 0.4)]
        cv.fill(np.concatenate([top, sides]), colour * 0.85)
    elif p["style"] == "tied":
        cv.fill(_ellipse(0.15, -1.45, 0.38, 0.3), colour)


def _draw_hair_cap(cv: _Canvas, p: dict, colour, rng) -> None:
    if p["style"] == "buzz":
        colour = _mix(colour, p["skin"], 0.45)
    w, v = p["face_w"] * 1.07 + p["volume"], 1.42 + p["volume"]
    side = {"short": -0.1, "buzz": -0.25, "tied": -0.05}.get(p["style"], 0.35)
    outer = _ellipse(0, 0, w, v, math.pi, 2 * math.pi, 20)
    xs = np.linspace(0.85, -0.85, 9)
    line = p["hairline"] + p["fringe"] * (1 - (xs / 0.85) ** 2) - 0.12 * (xs / 0.85) ** 2
    inner = np.concatenate([[(p["face_w"] * 0.99, side), (0.93, -0.45)], np.stack([xs, line], 1),
                            [(-0.93, -0.45), (-p["face_w"] * 0.99, side)]])
    cv.fill(np.concatenate([outer, [(w, side)], inner, [(-w, side)]]), colour)
    # strands: grey ones in proportion to greying, so it reads as salt-and-pepper, not a colour change
    angles = rng.uniform(math.pi * 1.22, math.pi * 1.78, 28)
    starts = np.stack([np.cos(angles) * w * 0.97, np.sin(angles) * v * 0.97], 1)
    ends = starts * rng.uniform(0.8, 0.9, (28, 1))
    strands = [np.stack([a, b]) for a, b in zip(starts, ends)]
    n_grey = int(round(p["grey"] * 28))
    cv.lines(strands[n_grey:], colour * 0.75, 0.025)
    if n_grey:
        cv.lines(strands[:n_grey], GREY, 0.03)


def _draw_face(cv: _Canvas, p: dict, rng) -> None:
    skin, ex, ey = p["skin"], p["eye_x"], p["eye_y"]
    for sx in (-1, 1):
        cv.fill(_ellipse(sx * p["face_w"] * 0.98, 0.12, 0.14, 0.24), skin * 0.9)                       # ears
        if p["earrings"]:
            cv.fill(_ellipse(sx * p["face_w"] * 0.99, 0.42, 0.05, 0.05), (225, 195, 90))
    cv.fill(_face_outline(p), skin)
    if p["beard"]:
        ys = np.linspace(0.35, p["face_h"], 8)
        xs = _lower_half_width(p, ys)
        cv.fill(np.concatenate([np.stack([xs, ys], 1), np.stack([-xs, ys], 1)[::-1]]), _mix(skin, p["hair"], 0.45))
    for sx in (-1, 1):
        if p["blush"] > 0.05:
            cv.fill(_ellipse(sx * 0.55, 0.3, 0.17, 0.1), _mix(skin, (235, 120, 130), p["blush"] * 0.5))
    spots = p["spots"][: max(0, (p["age"] - 48) // 2)]
    for x, y in spots:
        cv.fill(_ellipse(x * 0.6, -0.5 + abs(y) * 0.9, 0.03, 0.03, n=8), skin * 0.75)
    # wrinkles: how many and how dark both grow with age
    wr, crease = p["wrinkle"], skin * (0.9 - 0.3 * p["wrinkle"])
    forehead = [np.stack([np.linspace(-0.45, 0.45, 6), -0.6 - 0.1 * j + 0.03 * np.cos(np.linspace(-2, 2, 6))], 1)
                for j in range(int(wr * 4.5))]
    if forehead:
        cv.lines(forehead, crease, 0.022)
    if wr > 0.3:
        feet = [np.array([(ex + 0.2, ey), (ex + 0.34, ey + d)]) for d in (-0.08, 0.0, 0.08)]
        folds = [np.array([(sx * 0.17, 0.32), (sx * 0.28, 0.5), (sx * (p["mouth_w"] + 0.06), p["mouth_y"] + 0.08)])
                 for sx in (-1, 1)]
        bags = [_ellipse(sx * ex, ey + 0.05, 0.14, 0.07, 0.3, math.pi - 0.3, 6) for sx in (-1, 1)]
        cv.lines(feet + [f * [-1, 1] for f in feet] + folds + bags, crease, 0.02)
    brow_colour = _mix(p["hair"], GREY, p["grey"] * 0.6)
    for sx in (-1, 1):
        cv.fill(_ellipse(sx * ex, ey, 0.17, 0.075), (240, 238, 235))
        cv.fill(_ellipse(sx * ex + rng.normal(0, 0.015), ey, 0.065, 0.065, n=12), p["iris"])
        cv.lines([_ellipse(sx * ex, ey, 0.18, 0.08, math.pi, 2 * math.pi, 8)], (25, 20, 20), p["lid"])
        cv.lines([np.array([(sx * (ex - 0.2), ey - 0.18), (sx * ex, ey - 0.26), (sx * (ex + 0.2), ey - 0.21)])],
                 brow_colour, p["brow"])
    cv.fill(_ellipse(0, 0.28, 0.14, 0.08, n=12), skin * 0.82)                                          # nose tip
    for sx in (-1, 1):
        cv.fill(_ellipse(sx * 0.075, 0.33, 0.05, 0.028, n=10), skin * 0.35)                             # nostrils
    cv.lines([np.array([(-0.04, -0.05), (-0.09, 0.25), (-0.02, 0.3)])], skin * 0.62, 0.035)
    my, mw, smile = p["mouth_y"], p["mouth_w"], rng.normal(0, 0.03)
    upper = [(-mw, my - smile), (-mw * 0.4, my - 0.06), (0, my - 0.04), (mw * 0.4, my - 0.06), (mw, my - smile)]
    lower = [(mw, my - smile), (mw * 0.4, my + 0.08), (-mw * 0.4, my + 0.08)]
    cv.fill(upper + lower, p["lips"])
    parting = _mix(p["lips"] * 0.5, (60, 20, 25), 0.5)
    cv.lines([np.array([(-mw, my - smile), (0, my + 0.01), (mw, my - smile)])], parting, 0.025)


def _draw_mask(cv: _Canvas, p: dict, design: dict, state: str, rng) -> None:
    """wear: over the nose; incorrect: under the nose (mouth covered) or on the chin (mouth visible)."""
    if state == "wear":
        top, bridge = rng.uniform(-0.04, 0.08), rng.uniform(0.08, 0.16)
    elif rng.random() < 0.6:
        top, bridge = rng.uniform(0.47, 0.53), rng.uniform(0.0, 0.03)
    else:
        top, bridge = rng.uniform(0.82, 0.95), 0.0
    scale, colour = 1.07 * design["bottom"], design["colour"]
    ys = np.linspace(max(top, 0.0), p["face_h"] * scale, 10)
    right = np.stack([_lower_half_width(p, ys, scale) + 0.04, ys], 1)
    xs = np.linspace(right[0, 0], -right[0, 0], 9)
    edge = np.stack([xs, top - bridge * np.exp(-(xs / 0.3) ** 2)], 1)
    outline = np.concatenate([edge[::-1][:-1], right, right[::-1][1:] * [-1, 1]])
    cv.fill(outline, colour)
    cv.lines([np.concatenate([outline, outline[:1]])], colour * 0.6, 0.025)   # seams and shadow: the mask's shape
    inner = ys[1:-2]
    across = lambda rows, f: [np.array([(-w * f, y), (w * f, y)])                  # noqa: E731
                              for y, w in zip(rows, _lower_half_width(p, rows, scale))]
    if design["kind"] == "surgical":
        cv.lines(across(inner[::3], 1.0), colour * 0.8, 0.02)                       # pleats
        cv.lines([edge], _mix(colour, (255, 255, 255), 0.5), 0.03)
    elif design["kind"] == "kf94":
        cv.lines([np.array([(0, top - bridge), (0, p["face_h"] * scale)])], colour * 0.8, 0.02)
    if design["pattern"] == "stripes":
        cv.lines(across(inner[::2], 0.95), design["accent"], 0.05)
    elif design["pattern"] == "dots":
        for y, w in zip(inner, _lower_half_width(p, inner, scale)):
            for x in np.linspace(-w * 0.8, w * 0.8, 4):
                cv.fill(_ellipse(x, y, 0.04, 0.04, n=8), design["accent"])
    loop_y = ys[min(2, len(ys) - 1)]
    loops = [np.array([(sx * right[1, 0], loop_y), (sx * p["face_w"], 0.05)]) for sx in (-1, 1)]
    cv.lines(loops, _mix(colour, (240, 240, 240), 0.5), 0.03)


def _paint_background(image: np.ndarray, background: dict, rng) -> None:
    h, w = image.shape[:2]
    image[:] = background["base"]
    image[: h // 3] = _mix(background["base"], background["top"], 0.5)
    shift = rng.normal(0, 0.03, 2)
    for kind, (x, y), (sx, sy), colour in background["clutter"]:
        cx, cy, rx, ry = int((x + shift[0]) * w), int((y + shift[1]) * h), int(sx * w / 2) + 1, int(sy * h / 2) + 1
        if kind == 0:
            cv2.rectangle(image, (cx - rx, cy - ry), (cx + rx, cy + ry), _rgb(colour), -1)
        elif kind == 1:
            cv2.circle(image, (cx, cy), rx, _rgb(colour), -1, cv2.LINE_AA)
        else:
            cv2.line(image, (cx - rx, cy - ry), (cx + rx, cy + ry), _rgb(colour), max(1, w // 40), cv2.LINE_AA)


@functools.lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs / width - 0.5, ys / height - 0.5


def render(p: dict, state: str, rng: np.random.Generator, *, width: int, height: int) -> np.ndarray:
    """One photo of person `p` with mask `state`: a (height, width, 3) RGB uint8 image."""
    # pose and camera first, so the same generator state gives the same shot whatever the mask state draws
    image = np.zeros((height, width, 3), np.uint8)
    _paint_background(image, p["background"], rng)
    unit = min(width / 3.8, height / 5.0) * rng.uniform(0.9, 1.08)
    centre = (width / 2 + rng.normal(0, 0.04) * width, height * 0.44 + rng.normal(0, 0.03) * height)
    cv = _Canvas(image, centre=centre, unit=unit, angle=math.radians(float(np.clip(rng.normal(0, 6), -15, 15))))
    sigma = rng.uniform(0.0, 0.9) * max(width, height) / 128
    xs, ys = _grid(width, height)
    angle = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(0.8, 1.12) * (1 + rng.uniform(0.1, 0.5) * (xs * math.cos(angle) + ys * math.sin(angle)))
    light = light[..., None] * rng.uniform(0.93, 1.07, 3).astype(np.float32)      # gradient with a colour cast
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * rng.uniform(2, 8)

    hair = _mix(p["hair"], GREY, p["grey"] * 0.7)
    cv.fill([(-p["shoulders"] - 0.3, 4.5), (-p["shoulders"], 2.1), (-1.2, 1.62), (0, 1.8), (1.2, 1.62),
             (p["shoulders"], 2.1), (p["shoulders"] + 0.3, 4.5)], p["clothes"])
    _draw_hair_back(cv, p, hair)
    n = p["neck"]
    cv.fill([(-n, 0.7), (n, 0.7), (n * 1.05, 1.9), (-n * 1.05, 1.9)], p["skin"] * 0.85)
    if p["scarf"]:
        cv.fill(np.concatenate([_ellipse(0, 1.5, n + 0.25, 0.2, math.pi, 2 * math.pi, 8),
                                _ellipse(0, 1.75, n + 0.3, 0.15, 0, math.pi, 8)]), p["scarf_colour"])
    _draw_face(cv, p, rng)
    _draw_hair_cap(cv, p, hair, rng)
    if state != "not_wear":
        _draw_mask(cv, p, p["designs"][rng.integers(len(p["designs"]))], state, rng)
    if p["glasses"]:
        ex, ey = p["eye_x"], p["eye_y"]
        cv.lines([_ellipse(sx * ex, ey, 0.22, 0.14, n=14) for sx in (-1, 1)]
                 + [np.array([(-ex + 0.22, ey), (ex - 0.22, ey)])], (30, 30, 30), 0.03)
    out = cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0.3 else image
    return np.clip(out * light + noise, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok, "JPEG encoding failed"
    return buffer.tobytes()


def person_identity(seed: int, split: int, index: int) -> tuple[dict, np.random.Generator]:
    """One person's identity (female, age, race and looks) and the generator their photos continue from.

    `split` 0 = train, 1 = eval keeps the two sets' people apart; the identity is drawn first, so it is the same
    whether or not the photos are rendered (cheap label statistics).
    """
    rng = np.random.default_rng([seed, split, index])
    return _draw_person(rng), rng


def person_images(seed: int, split: int, index: int, *, width: int, height: int) -> tuple[dict, dict[str, bytes]]:
    """(identity, {stem: jpeg bytes}) of one person."""
    person, rng = person_identity(seed, split, index)
    return person, {s: _jpeg(render(person, STEM_MASK[s], rng, width=width, height=height)) for s in STEMS}
