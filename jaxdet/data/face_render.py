"""Face renderer of the embedded face benchmark: one face with exact 68-point landmarks.

Rendering (``render_face``): a 3-D face template in cm (x right, y down, z to the camera) from
*identity* parameters (jaw width / squareness, face length, head width, eye size / spacing /
opening / tilt, brows, nose length / width / depth, mouth, lips, ears, skin, lip, iris and hair
colours, hair style / volume / hairline / length, beard) and *view* parameters (uniform yaw +-40,
pitch +-20, roll +-25 degrees; mouth opening with jaw drop, smile per side, brow raise, eye
opening; scale 0.75-1.05 = head height (20 cm) / frame; shift +-10 px, then moved so that all
landmarks are inside the frame; light direction, ambient, tint, shirt colour), rotated and
projected orthographically. Shirt, hair, ears, neck, skin, beard, nose (shadow, wings, nostrils),
brows, eyes (white, iris, pupil, lids) and lips / mouth / teeth are PIL polygons drawn at 2x and
box-averaged; the face is shaded by a Lambertian ellipsoid head and laid over a crop of a
scikit-image photo (coffee, rocket, immunohistochemistry, hubble, motorcycle, colorwheel, retina,
brick, grass, gravel, cell, moon: no camera / astronaut faces, no cat) or a smooth colour field.

Landmarks (iBUG 68, image-left first, continuous pixel coordinates as in ``face_records``) are
projected template points the drawn contours are built from, so they are exact: jaw 0-16 are
vertices of the face outline, brows 17-26 the centre line of the brow bands, 27-30 the nose
bridge (30 the tip), 31-35 the nose base, 36-47 the lid contours (corners, then 1/3 and 2/3 along
the lids), the pupil is centred at the mean of each eye's six points (the 5-point eye centre),
48-59 the outer, 60-67 the inner lip contour. Visibility: jaw points and outer eye corners carry
a surface normal (jaw: 65 degrees sideways at the ears to 20 down at the chin; eye corners 52); a
point is self-occluded when its rotated normal points away from the camera (far-side jaw points
beyond ~25 degrees of yaw, far outer eye corners beyond ~38). ``box`` = xyxy bounds of all 68.

Real LR (``degrade_to_real_lr``, the WIDER FACE 20-40 px role): an HR render (128 x 128) put
through Gaussian blur sigma 0.5-1.5 HR px, a resize to 32 x 32 by a random PIL filter (bilinear /
bicubic / nearest / box, never the paper's Gaussian + 4x average pool), per-channel gain / offset
+ gamma, noise sigma 2-8, JPEG quality 30-70. Truth = HR landmarks x 32/128 (exact for a resize
of the whole frame; PIL nearest samples 0.125 LR px off).

The splits, the cached build and the ``FaceSource`` are in ``jaxdet.data.face_benchmark``.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HR_SIZE, LR_SIZE = 128, 32
_SKIN = np.array([[252, 224, 204], [238, 192, 160], [212, 158, 118], [168, 116, 80],
                  [112, 74, 52]], np.float32)
_HAIR = np.array([[22, 18, 16], [58, 38, 26], [105, 70, 42], [196, 156, 98], [150, 62, 30],
                  [150, 148, 145], [230, 218, 190]], np.float32)
_IRIS = np.array([[72, 44, 24], [112, 76, 40], [70, 112, 160], [84, 122, 84], [40, 30, 24]],
                 np.float32)
FLAT_BACKGROUND = (0, 255, 0)  # background colour of flat (debug) renders
EYE_WHITE, PUPIL, MOUTH_INSIDE = (236, 232, 226), (12, 10, 10), (70, 22, 26)


# ---------------------------------------------------------------------------------- parameters
def sample_identity(rng) -> dict:
  """Parameters fixed for one identity (centimetres; colours RGB 0..255)."""
  u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
  t = u(0, len(_SKIN) - 1)
  skin = (_SKIN[int(t)] + (t % 1) * (_SKIN[min(int(t) + 1, len(_SKIN) - 1)] - _SKIN[int(t)]))
  skin = np.clip(skin * rng.uniform(0.97, 1.03, 3) * u(0.92, 1.05), 0, 255)
  hair = np.clip(_HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.95, 1.05, 3) * u(0.8, 1.15), 0, 255)
  return dict(
      jaw_width=u(6.2, 7.6), jaw_power=u(2.0, 3.4), face_length=u(10.6, 12.6),
      head_width=u(0.97, 1.1), eye_spacing=u(2.9, 3.45), eye_width=u(2.5, 3.2),
      eye_open=u(0.75, 1.25), eye_tilt=u(-0.15, 0.3), brow_height=u(1.6, 2.4),
      brow_arch=u(0.15, 0.7), brow_thick=u(0.3, 0.7), nose_length=u(4.3, 5.4),
      nose_width=u(1.45, 2.0), nose_depth=u(1.7, 2.8), mouth_gap=u(1.6, 2.3),
      mouth_width=u(2.1, 2.9), upper_lip=u(0.4, 0.8), lower_lip=u(0.45, 1.0), ear=u(0.85, 1.15),
      skin=skin, lip=skin * np.array([0.98, 0.62, 0.64]) * u(0.8, 1.0),
      iris=_IRIS[rng.integers(len(_IRIS))] * u(0.8, 1.2), hair=hair, brow=hair * u(0.55, 0.9),
      hair_style=int(rng.choice(5, p=[0.08, 0.34, 0.26, 0.16, 0.16])), hair_volume=u(1.03, 1.16),
      hairline=u(5.5, 7.2), sideburn=u(-1.5, 1.2), fringe_gap=u(0.3, 1.2), hair_length=u(8, 18),
      beard=bool(rng.random() < 0.15))


def sample_view(rng, size: int = HR_SIZE) -> dict:
  """Per-image pose, expression, framing and lighting."""
  u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
  smile = u(0, 1) ** 1.5
  az, el = np.radians(u(-70, 70)), np.radians(u(-20, 50))
  return dict(
      yaw=u(-40, 40), pitch=u(-20, 20), roll=u(-25, 25), scale=u(0.75, 1.05),
      shift=rng.uniform(-10, 10, 2) * size / 128,
      mouth_open=0.0 if rng.random() < 0.5 else u(0.1, 1.6),
      smile=(smile + u(-0.15, 0.15), smile + u(-0.15, 0.15)), brow_raise=u(-0.2, 0.5),
      eye_open=tuple((1 - 0.3 * smile) * u(0.65, 1.1) for _ in range(2)),
      light=np.array([np.sin(az) * np.cos(el), -np.sin(el), np.cos(az) * np.cos(el)]),
      ambient=u(0.35, 0.7), tint=rng.uniform(0.94, 1.06, 3), shirt=rng.uniform(0, 255, 3),
      noise=u(0.5, 2.5))


# ------------------------------------------------------------------------------ 3-D template
def _stack(x, y, z) -> np.ndarray:
  """[n, 3] points from coordinates (arrays of length n or scalars)."""
  out = np.empty((max(np.size(x), np.size(y), np.size(z)), 3))
  out[:, 0], out[:, 1], out[:, 2] = x, y, z
  return out


def _jaw(p, v):
  """33 points of the jaw line, image left to right; landmarks 0..16 are the even rows."""
  th = np.linspace(0, np.pi, 33)
  c, s = np.cos(th), np.sin(th)
  e = 2.0 / p["jaw_power"]
  x = -p["jaw_width"] * np.sign(c) * np.abs(c) ** e
  y = 1.2 + (p["face_length"] - 1.2) * s ** e + 0.8 * v["mouth_open"] * s ** 2
  tilt = np.radians(20 + 45 * (1 - s) ** 0.8)  # normal: from the front towards (-c, s)
  normals = _stack(-c * np.sin(tilt), s * np.sin(tilt), np.cos(tilt))
  return _stack(x, y, -3.8 * np.abs(c) ** 1.3 + 0.3 * s), normals[::2]


def _eye(p, v, side):
  """Upper and lower lid, 10 points each from the outer (t=0) to the inner corner (t=1), for
  side -1 (image left) or +1."""
  t = np.linspace(0, 1, 10)
  x = side * (p["eye_spacing"] + p["eye_width"] / 2 * (1 - 2 * t))
  base, arc = -p["eye_tilt"] * (1 - t) + 0.1 * t, np.sin(np.pi * t)
  op = p["eye_open"] * v["eye_open"][side > 0]
  z = -0.9 + 0.4 * t + 0.5 * arc
  return _stack(x, base - 0.62 * op * arc ** 0.8, z), _stack(x, base + 0.36 * op * arc ** 1.1, z)


def _brow(p, v, side):
  """Brow centre line, 9 points from the outer (t=0) to the inner end, and its thickness."""
  t = np.linspace(0, 1, 9)
  outer = p["eye_spacing"] + p["eye_width"] / 2 + 0.6
  y = (-(p["brow_height"] + v["brow_raise"]) + 0.4 * (1 - t) ** 2
       - p["brow_arch"] * np.sin(np.pi * t ** 0.75))
  line = _stack(side * (outer + (1.0 - outer) * t), y, 0.5 - 1.2 * (1 - t) ** 1.5)
  return line, p["brow_thick"] * (0.55 + 0.45 * t)


def _nose(p, side):
  """Bridge 27-30, base 31-35, and the shadowed side (``side``) as a polygon plus wing lines."""
  n, w, d = p["nose_length"], p["nose_width"], p["nose_depth"]
  bridge = _stack(0, np.linspace(0.3, n - 0.85, 4), 0.9 + (d - 0.9) * np.linspace(0, 1, 4) ** 1.3)
  base = _stack(np.array([-1, -0.45, 0, 0.45, 1]) * w, n + np.array([-0.35, -0.05, 0.05, -0.05,
                                                                      -0.35]), [0.3, 0.9, 1.1, 0.9, 0.3])
  wing = _stack(side * w * np.array([1, 1.08, 0.85, 0.55]), n - np.array([0.35, 0.9, 1.4, 1.55]),
                [0.3, 0.4, 0.7, 0.9])
  shadow = np.concatenate([bridge[:1] + [side * 0.3, 0.2, -0.2], _stack(side * 0.45, 1.5, 0.8),
                           wing[::-1], base[[2 + side]], bridge[::-1]])
  return bridge, base, wing, shadow


def _mouth(p, v):
  """Landmarks 48-67 and the dense outer lip / inner mouth contours and the teeth band."""
  my, mw, o = p["nose_length"] + p["mouth_gap"], p["mouth_width"], v["mouth_open"]

  def lip(f, side, kind):
    f = np.asarray(f, np.float64)
    smile = v["smile"][side > 0]
    x = side * f * (mw + 0.35 * smile)
    line = my + (-0.55 * smile + 0.25 * o) * f ** 2
    gap = o * np.clip(1 - (f / 0.85) ** 2, 0, 1) ** 0.6
    if kind == "upper":
      y, zc = line - p["upper_lip"] * np.interp(f, [0, .25, .6, 1], [.82, 1, .75, 0]), 1.3
    elif kind == "lower":
      y, zc = line + gap + p["lower_lip"] * np.interp(f, [0, .25, .6, 1], [1, .97, .75, 0]), 1.1
    else:
      y, zc = line + (gap if kind == "inner_lo" else 0), 0.9
    return _stack(x, y, 0.1 + zc * (1 - f ** 2))

  lm = np.concatenate([lip([1, .6, .25, 0], -1, "upper"), lip([.25, .6, 1], 1, "upper"),
                       lip([.6, .25, 0], 1, "lower"), lip([.25, .6], -1, "lower"),
                       lip([.85, .4, 0], -1, "inner_up"), lip([.4, .85], 1, "inner_up"),
                       lip([.4, 0], 1, "inner_lo"), lip([.4], -1, "inner_lo")])
  half = lambda f, kind: np.concatenate([lip(f, -1, kind), lip(f[::-1][1:], 1, kind)])  # noqa: E731
  fo = np.array([1, .85, .72, .6, .42, .25, .12, 0])
  up, lo = half(fo[1:], "inner_up"), half(fo[1:], "inner_lo")
  teeth = np.concatenate([up, (up + np.minimum(lo - up, [0, 0.35, 0]))[::-1]])
  outer = np.concatenate([half(fo, "upper"), half(fo, "lower")[::-1][1:-1]])
  return lm, outer, np.concatenate([up, lo[::-1][1:-1]]), teeth


def _arc(width, y_end, y_top, z_side, z_top, power, n=17):
  """A head-top arc from the right side (x = width, y = y_end) over y_top to the left side."""
  phi = np.linspace(0, np.pi, n)
  c, s = np.cos(phi), np.sin(phi)
  return _stack(width * c, y_end + (y_top - y_end) * s ** power, z_side * np.abs(c) ** 1.3 + z_top * s)


def _ellipse(cx, cy, z, rx, ry, n=12):
  a = np.linspace(0, 2 * np.pi, n, endpoint=False)
  return _stack(cx + rx * np.cos(a), cy + ry * np.sin(a), z)


def face_geometry(p: dict, v: dict) -> tuple[np.ndarray, np.ndarray, dict]:
  """3-D landmarks [68, 3], their visibility normals [68, 3] and the drawn parts (name -> list
  of [k, 3] polygons; ``eyes``: (opening, iris, pupil) triples), in template centimetres."""
  jaw, jaw_normals = _jaw(p, v)
  (ul, ll), (ur, lr) = _eye(p, v, -1), _eye(p, v, 1)
  (bl, tl), (br, tr) = _brow(p, v, -1), _brow(p, v, 1)
  bridge, base, wing, shadow = _nose(p, -1 if v["light"][0] > 0 else 1)
  mouth, outer, inner, teeth = _mouth(p, v)
  lm = np.concatenate([jaw[::2], bl[::2], br[::-2], bridge, base, ul[[0, 3, 6, 9]], ll[[6, 3]],
                       ur[[9, 6, 3, 0]], lr[[3, 6]], mouth])
  normals = np.tile([0.0, 0.0, 1.0], (68, 1))
  normals[:17] = jaw_normals
  normals[[36, 45]] = [[-np.sin(0.91), 0, np.cos(0.91)], [np.sin(0.91), 0, np.cos(0.91)]]
  w, n, nw = p["jaw_width"], p["nose_length"], p["nose_width"]
  head = _arc(w, 1.2, -10.5, -3.8, -2.5, 0.8)
  head[:, 0] *= 1 + (p["head_width"] - 1) * np.sin(np.linspace(0, np.pi, 17))
  eyes = [(np.concatenate([up, lo[-2:0:-1]]), _ellipse(*c, 0.58, 0.58, 16), _ellipse(*c, 0.26, 0.26))
          for up, lo, c in ((ul, ll, lm[36:42].mean(0)), (ur, lr, lm[42:48].mean(0)))]
  polys = dict(
      shirt=[_stack([-22, -18, -7, 0, 7, 18, 22], [32, 20, 16.5, 19, 16.5, 20, 32], -4)],
      ears=[_ellipse(sx * (w - 0.1), 2.3, -4.4, 1.1 * p["ear"], 2.8 * p["ear"]) for sx in (-1, 1)],
      neck=[_stack(np.array([-1, -1.05, 1.05, 1]) * 0.62 * w, [6.5, 24, 24, 6.5], -3.5)],
      face=[np.concatenate([jaw, head[1:-1]])], nose_shadow=[shadow], wing=[wing], nose_base=[base],
      nostrils=[_ellipse(sx * 0.62 * nw, n - 0.3, 0.75, 0.17 * nw, 0.15) for sx in (-1, 1)],
      brows=[np.concatenate([b - _stack(0, t / 2, 0), (b + _stack(0, t / 2, 0))[::-1]])
             for b, t in ((bl, tl), (br, tr))],
      eyes=eyes, lids=[ul, ur], lower_lids=[ll, lr], lips=[outer], inner=[inner], teeth=[teeth],
      corners=[mouth[[0, 12]], mouth[[6, 16]]], **_hair(p, w))
  if p["beard"]:  # chin and cheeks below the mouth corners, under the lower lip
    my, mw = n + p["mouth_gap"], p["mouth_width"] + 0.9
    chin = my + v["mouth_open"] + p["lower_lip"] + 0.35
    polys["beard"] = [np.concatenate([jaw[6:27], _stack([mw, 0, -mw], [my - 0.2, chin, my - 0.2], 0.8)])]
  return lm, normals, polys


def _hair(p, w) -> dict:
  """Hair on top (edge at the hairline or a fringe above the brows) and long hair behind."""
  style, vol, sb = p["hair_style"], p["hair_volume"], p["sideburn"]
  if style == 0:  # bald
    return {}
  top = -10.5 - 8 * (vol - 1)
  out = _arc(w * p["head_width"] * vol, sb, top, -3.8, -2.5, 0.8)
  if style in (3, 4):  # fringe: a flat edge above the highest brow position
    line = -(p["brow_height"] + p["brow_arch"] + p["brow_thick"] / 2 + 0.5 + p["fringe_gap"])
    edge = _arc(w * 0.93, sb, line, -3.0, 1.0, 0.25)
  else:
    edge = _arc(w * 0.93, sb, -p["hairline"], -3.0, 0.8, 0.5)
  polys = {"hair": [np.concatenate([out, edge[::-1]])]}
  if style in (2, 4):
    back = _arc(w * p["head_width"] * vol * 1.04 + 0.4, p["hair_length"], top - 0.3, -6, -6, 0.8)
    polys["back_hair"] = [np.concatenate([back, _stack([-0.6 * w, 0.6 * w], p["hair_length"] + 1, -6)])]
  return polys


def _rotation(yaw, pitch, roll) -> np.ndarray:
  a, b, c = np.radians([yaw, pitch, roll])
  ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
  rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
  rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
  return rz @ rx @ ry


# ----------------------------------------------------------------------------------- rendering
_PIVOT = np.array([0.0, 4.4, -3.0])        # rotation centre (cm), projected to the frame centre
_SHADE_CENTRE = np.array([0.0, 3.5, -3.0])  # ellipsoid head used for the shading


def _colour(c, f: float = 1.0) -> tuple:
  return tuple(int(x) for x in np.clip(np.asarray(c, np.float64) * f, 0, 255)) + (255,)


def _draw_eye(img, draw, eye, iris, pupil, colour):
  """Eye white, then iris and pupil clipped to the eye opening."""
  draw.polygon(eye.ravel().tolist(), fill=_colour(EYE_WHITE))
  (x0, y0), (x1, y1) = eye.min(0).astype(int) - 1, eye.max(0).astype(int) + 2
  shift = lambda pts: (pts - [x0, y0]).ravel().tolist()  # noqa: E731
  mask = Image.new("L", (x1 - x0, y1 - y0), 0)
  ImageDraw.Draw(mask).polygon(shift(eye), fill=255)
  patch = img.crop((x0, y0, x1, y1))
  pd = ImageDraw.Draw(patch)
  pd.polygon(shift(iris), fill=_colour(colour))
  pd.polygon(shift(pupil), fill=_colour(PUPIL))
  img.paste(patch, (x0, y0), mask)


def _draw_layer(polys: dict, p: dict, v: dict, to_px, ppc2: float, size2: int) -> Image.Image:
  """The face layer (RGBA, transparent background) at twice the output size."""
  img = Image.new("RGBA", (size2, size2), (0, 0, 0, 0))
  d = ImageDraw.Draw(img)
  skin, hair, lip, closed = p["skin"], p["hair"], p["lip"], v["mouth_open"] <= 0.05
  parts = [  # (part, colour, line width in cm or 0 for filled polygons), in drawing order
      ("shirt", v["shirt"], 0), ("back_hair", hair * 0.8, 0), ("ears", skin * 0.9, 0),
      ("neck", skin * 0.8, 0), ("face", skin, 0), ("beard", hair * 0.9, 0),
      ("nose_shadow", skin * 0.9, 0), ("wing", skin * 0.6, 0.12), ("nose_base", skin * 0.7, 0.06),
      ("nostrils", skin * 0.35, 0), ("brows", p["brow"], 0), ("eyes", p["iris"], 0),
      ("lids", (35, 25, 25), 0.1), ("lower_lids", skin * 0.7, 0.04), ("lips", lip, 0),
      ("inner", lip * 0.55 if closed else MOUTH_INSIDE, 0.06 if closed else 0),
      ("" if closed else "teeth", (236, 230, 214), 0), ("corners", lip * 0.55, 0.06),
      ("hair", hair, 0)]
  for key, colour, line in parts:
    for poly in polys.get(key, ()):
      if key == "eyes":
        _draw_eye(img, d, *(to_px(a) for a in poly), colour)
      elif line:
        d.line(to_px(poly).ravel().tolist(), fill=_colour(colour), width=max(1, round(line * ppc2)))
      else:
        d.polygon(to_px(poly).ravel().tolist(), fill=_colour(colour))
  return img


def _shading(p: dict, v: dict, rot, ppc: float, centre, size: int) -> np.ndarray:
  """Lambertian shading [size, size] of an ellipsoid head: ambient + (1 - ambient) max(n.l, 0)
  (computed at a quarter of the resolution, bilinearly upsampled: it is smooth)."""
  size, ppc, centre = size // 4, ppc / 4, np.asarray(centre) / 4
  axes = np.array([p["jaw_width"] * 1.1, 9.5, 5.5])
  u = (np.arange(size) + 0.5 - centre[0]) / ppc
  w = (np.arange(size) + 0.5 - centre[1]) / ppc
  q0 = (u[None, :, None] * rot[0] + w[:, None, None] * rot[1]) / axes + (_PIVOT - _SHADE_CENTRE) / axes
  d = rot[2] / axes  # the viewing ray in scaled face coordinates
  a, b = d @ d, 2 * (q0 @ d)
  disc = np.maximum(b * b - 4 * a * ((q0 * q0).sum(-1) - 1), 0)
  q = q0 + ((-b + np.sqrt(disc)) / (2 * a))[..., None] * d
  n = (q / axes) @ rot.T
  n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-9
  shade = (v["ambient"] + (1 - v["ambient"]) * np.clip(n @ v["light"], 0, None)).astype(np.float32)
  return np.asarray(Image.fromarray(shade, "F").resize((4 * size, 4 * size), Image.BILINEAR))


_PHOTOS: list = []


def _photos() -> list:
  """Background photos (scikit-image data; no human or cat faces)."""
  if not _PHOTOS:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      import skimage.data as skd
      arrays = [skd.coffee(), skd.rocket(), skd.immunohistochemistry(), skd.hubble_deep_field(),
                skd.stereo_motorcycle()[0], skd.colorwheel(), skd.retina(), skd.brick(),
                skd.grass(), skd.gravel(), skd.cell(), skd.moon()]
    for a in arrays:
      a = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
      img = Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8))
      _PHOTOS.append(img.reduce(max(1, min(img.size) // 320)))  # crops are resized to ~128 anyway
  return _PHOTOS


def _background(rng, size: int) -> np.ndarray:
  """A random photo crop (75%) or a smooth random colour field, float32 [size, size, 3]."""
  if rng.random() < 0.25:
    k = int(rng.integers(2, 7))
    tiny = rng.uniform(0, 255, (k, k, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(tiny).resize((size, size), Image.BICUBIC), np.float32)
  photos = _photos()
  photo = photos[int(rng.integers(len(photos)))]
  w, h = photo.size
  side = max(32, int(rng.uniform(0.2, 0.8) * min(w, h)))
  x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
  a = np.asarray(photo.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side)),
                 np.float32)
  return (a[:, ::-1] if rng.random() < 0.5 else a) * float(rng.uniform(0.6, 1.15))


def render_face(rng, identity: dict, view: dict, *, size: int = HR_SIZE,
                flat: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One face: ``(image uint8 [size, size, 3], landmarks float32 [68, 2], visible bool [68])``.

  ``flat=True`` (debug, tests) draws the same geometry without shading and noise on a constant
  ``FLAT_BACKGROUND``, so every part has its exact colour. ``rng`` draws the background and the
  noise; the view may move the face (``shift``) so that all landmarks are inside the frame.
  """
  lm3, normals, polys = face_geometry(identity, view)
  rot = _rotation(view["yaw"], view["pitch"], view["roll"])
  ppc = view["scale"] * size / 20.0  # pixels per cm: a head with hair (~20 cm) is `scale` x frame
  centre = size / 2 + np.asarray(view["shift"], np.float64)
  lm = (lm3 - _PIVOT) @ rot.T[:, :2] * ppc + centre
  lo, hi = lm.min(0), lm.max(0)
  move = np.maximum(1 - lo, 0) - np.maximum(hi - (size - 1), 0)
  lm, centre = lm + move, centre + move
  visible = (normals @ rot.T)[:, 2] > 0
  to_px = lambda a: (np.asarray(a) - _PIVOT) @ rot.T[:, :2] * (2 * ppc) + 2 * centre  # noqa: E731
  layer = _draw_layer(polys, identity, view, to_px, 2 * ppc, 2 * size)
  a = np.asarray(layer.reduce(2), np.float32)  # 2x2 box average (PIL: straight alpha)
  alpha = a[..., 3:] / 255.0
  rgb = a[..., :3] * alpha
  if flat:
    out = rgb + np.array(FLAT_BACKGROUND, np.float32) * (1 - alpha)
  else:
    shade = _shading(identity, view, rot, ppc, centre, size)[..., None] * view["tint"]
    out = rgb * shade.astype(np.float32) + _background(rng, size) * (1 - alpha)
    out += rng.standard_normal(out.shape, np.float32) * np.float32(view["noise"])
  return np.clip(np.rint(out), 0, 255).astype(np.uint8), lm.astype(np.float32), visible


_LR_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
               "box": Image.BOX}


def degrade_to_real_lr(image_hr: np.ndarray, rng, size: int = LR_SIZE, *,
                       return_params: bool = False):
  """The "real LR" camera: blur, resize, colour shift, noise and JPEG (module docstring).

  Returns uint8 ``[size, size, 3]`` (and the drawn parameters with ``return_params``).
  """
  prm = dict(blur=float(rng.uniform(0.5, 1.5)), resize=list(_LR_FILTERS)[int(rng.integers(4))],
             gain=rng.uniform(0.8, 1.2, 3), offset=rng.uniform(-0.06, 0.06, 3),
             gamma=float(rng.uniform(0.75, 1.35)), noise=float(rng.uniform(2, 8)),
             quality=int(rng.integers(30, 71)))
  img = Image.fromarray(np.asarray(image_hr, np.uint8)).filter(ImageFilter.GaussianBlur(prm["blur"]))
  a = np.asarray(img.resize((size, size), _LR_FILTERS[prm["resize"]]), np.float32) / 255.0
  a = np.clip(a * prm["gain"] + prm["offset"], 0, 1) ** prm["gamma"] * 255.0
  a = a + rng.standard_normal(a.shape, np.float32) * prm["noise"]
  buf = io.BytesIO()
  Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).save(buf, "JPEG",
                                                                     quality=prm["quality"])
  out = np.asarray(Image.open(buf).convert("RGB"))
  return (out, prm) if return_params else out
