"""The pictures the case viewer shows, marked for a reader: the film with its orientation (a frontal chest
film shows the patient's right on the image's left), the Grad-CAM map laid over that same film where the
classifier looked (the centre square of a user's file, the whole of a dataset film), and a colour scale
saying what red and blue mean."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .pictures import read_square

SCALE_HEIGHT = 16  # px of the colour bar under the overlay
COLORMAP = "jet"   # as pneumo.explain.overlay draws the figures: red = strongest evidence, blue = least


def _font(size: int):
    return ImageFont.load_default(size=size)


def _marks(img: Image.Image) -> Image.Image:
    """'R' at the bottom left and 'L' at the bottom right, white on a dark box, sized to the picture (the
    top corners are where a page puts its labels and buttons)."""
    draw = ImageDraw.Draw(img)
    size = max(12, img.width // 20)
    font = _font(size)
    y = img.height - size - size // 2
    for text, x in (("R", size // 3), ("L", img.width - size - size // 3)):
        box = draw.textbbox((x, y), text, font=font)
        draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
        draw.text((x, y), text, fill=(255, 255, 255), font=font)
    return img


def marked_film(display: np.ndarray) -> np.ndarray:
    """The film as shown, RGB, with its orientation marks."""
    return np.asarray(_marks(Image.fromarray(display).convert("RGB")))


def aligned_overlay(display: np.ndarray, cam_map, strength=0.6, target="pneumonia", weight=1.0, note=None) -> np.ndarray:
    """The map over the film as shown (`display`, grey uint8), inside the centre square the classifier reads
    (read_square; all of a square film) and untouched outside it, with a thin outline of that square, the
    orientation marks and a colour scale underneath. The colour's opacity follows the map (up to
    `strength` × `weight` at its peak: a weight below 1 draws a class the classifier did not decide on as
    faintly as its evidence is weak), so where the map is cold the film shows through; inside a film wider
    or taller than the square it fades out towards the square's edge instead of stopping at it. `note`
    is a line under the scale (what the map is not)."""
    from matplotlib import colormaps
    film = Image.fromarray(display).convert("RGB")
    left, top, side = read_square((film.height, film.width))
    cam = np.asarray(Image.fromarray(np.asarray(cam_map, dtype=np.float32)).resize((side, side), Image.Resampling.BILINEAR))
    cam = np.clip(cam, 0, 1)
    patch = np.asarray(film.crop((left, top, left + side, top + side)), dtype=np.float32) / 255
    fade = _edge_fade(side, across=film.width > side, down=film.height > side)
    alpha = (strength * float(np.clip(weight, 0, 1)) * cam * fade)[..., None]
    blended = (1 - alpha) * patch + alpha * colormaps[COLORMAP](cam)[..., :3]
    film.paste(Image.fromarray(np.uint8(np.round(255 * blended))), (left, top))
    draw = ImageDraw.Draw(film)
    if (side, side) != film.size:  # where the classifier looked, on a film wider or taller than that
        draw.rectangle((left, top, left + side - 1, top + side - 1), outline=(255, 255, 255), width=1)
    return np.asarray(_with_scale(_marks(film), target, note))


FADE = 1 / 14  # share of the square's side over which the colour fades out at an edge inside the film


def _edge_fade(side: int, across: bool, down: bool) -> np.ndarray:
    """(side, side) weights: 1, falling smoothly to 0 over FADE of the side at the square's left and right
    edges when it lies inside a wider film (`across`), and at its top and bottom inside a taller one
    (`down`): no hard colour edge inside the film. All 1 for a square film."""
    distance = np.minimum(np.arange(side), np.arange(side)[::-1]) + 0.5
    ramp = np.clip(distance / max(2.0, FADE * side), 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    ones = np.ones(side)
    return np.outer(ramp if down else ones, ramp if across else ones).astype(np.float32)


def _with_scale(img: Image.Image, target: str, note=None) -> Image.Image:
    """The picture with a colour bar and its words under it (and `note`, a line of its own)."""
    from matplotlib import colormaps
    font = _font(max(10, min(14, img.width // 32)))
    words_height = font.size + 6
    lines = [f"evidence for {target}, relative to this film", *([note] if note else [])]
    out = Image.new("RGB", (img.width, img.height + SCALE_HEIGHT + (1 + len(lines)) * words_height), (255, 255, 255))
    out.paste(img, (0, 0))
    bar = np.uint8(255 * colormaps[COLORMAP](np.linspace(0, 1, img.width))[:, :3])
    out.paste(Image.fromarray(np.repeat(bar[None], SCALE_HEIGHT, axis=0)), (0, img.height))
    draw = ImageDraw.Draw(out)
    y = img.height + SCALE_HEIGHT + 2
    draw.text((2, y), "blue: little", fill=(0, 0, 0), font=font)
    right = "red: strongest"
    draw.text((img.width - draw.textlength(right, font=font) - 2, y), right, fill=(0, 0, 0), font=font)
    for i, line in enumerate(lines, start=1):
        draw.text((2, y + i * words_height), line, fill=(0, 0, 0), font=font)
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, height: int = 280, gap: int = 8) -> np.ndarray:
    """Two RGB pictures at one height, left and right, with a white gap: a case beside a similar case."""
    parts = [Image.fromarray(p).convert("RGB") for p in (left, right)]
    parts = [p.resize((max(1, round(p.width * height / p.height)), height), Image.Resampling.LANCZOS) for p in parts]
    out = Image.new("RGB", (parts[0].width + gap + parts[1].width, height), (255, 255, 255))
    out.paste(parts[0], (0, 0))
    out.paste(parts[1], (parts[0].width + gap, 0))
    return np.asarray(out)
