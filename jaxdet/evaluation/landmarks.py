"""Landmark localisation metrics of the low-resolution landmark paper (§4.1 "Evaluation Metric",
§4.2, Tables 1 and 4): per-image NRMSE, the cumulative error distribution (CED), its AUC and the
failure rate, plus a CED plot drawn with PIL.

* Per-image error (§4.1): "averaging normalized errors for all annotated landmarks", i.e. the mean
  over *visible* points of the Euclidean point-to-point distance, divided by a normaliser:
  the ground-truth box size for AFLW, the inter-pupil distance for 300W (§4.1), the face size
  for the 5-point real-LR set (§4.2, Table 1a). 300W results are also commonly given with the
  inter-ocular (outer eye corners) distance, so both are available for the 68-point scheme.
* Reported as in Table 1b: NRMSE mean +- std in percent, ``auc@0.07`` / ``auc@0.08`` in percent.

All arrays are host numpy; coordinates are ``jaxdet.data.face_records``'s continuous pixels (any
common scale: the errors are scale-free).
"""
from __future__ import annotations

import math

import numpy as np

from jaxdet.data.face_records import scheme as get_scheme

NORMALISERS = ("box", "inter_pupil", "inter_ocular", "face_size")
DEFAULT_NORMALISER = {"19": "box", "68": "inter_pupil", "5": "face_size"}


def _box_size(boxes, b: int) -> np.ndarray:
  if boxes is None:
    raise ValueError("this normaliser needs the face boxes [B, 4] (xyxy), got None")
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  if len(boxes) != b:
    raise ValueError(f"boxes must be [B, 4] with B = {b}, got {len(boxes)} boxes")
  w = boxes[:, 2] - boxes[:, 0]
  h = boxes[:, 3] - boxes[:, 1]
  return np.sqrt(np.clip(w, 0, None) * np.clip(h, 0, None))


def normalisers(landmarks_gt, boxes, scheme_name: str, kind: str, visible=None) -> np.ndarray:
  """Per-image normalising distance ``[B]`` (float64; NaN where it cannot be computed).

  Kinds:
    * ``'box'`` (AFLW, §4.1 "normalized by the ground truth bounding box size"):
      ``sqrt(w * h)`` of the ground-truth face box, the face size of SAN's AFLW protocol
      (Dong et al. 2018, whose code computes ``sqrt((y2 - y1) (x2 - x1))`` of the face box) and
      of LAB's AFLW-Full numbers (Wu et al. 2018, normalised by face size).
    * ``'inter_pupil'`` (300W, §4.1): distance between the two pupils, each the mean of the
      scheme's ``pupils`` point set (eye-contour means for 68 points, eye centres for 19 / 5).
      With ``visible`` given, a pupil is the mean of its visible points, NaN if none is visible.
    * ``'inter_ocular'``: distance between the outer eye corners (``scheme.outer_eye_corners``,
      the 300W challenge convention); an error for schemes without them (5 points). NaN when
      ``visible`` says a corner is missing.
    * ``'face_size'`` (5-point real LR, Table 1a "normalized by the face size"): the same
      ``sqrt(w * h)`` of the given face box; a separate name so that results say which
      protocol they follow.

  Args:
    landmarks_gt: ``[B, N, 2]`` ground truth.
    boxes: ``[B, 4]`` xyxy face boxes (needed for 'box' / 'face_size'; may be None otherwise).
    scheme_name: '68', '19' or '5'.
    kind: one of ``NORMALISERS``.
    visible: optional ``[B, N]`` bool (pupil / corner availability).
  """
  sch = get_scheme(scheme_name)
  gt = np.asarray(landmarks_gt, np.float64)
  if gt.ndim != 3 or gt.shape[1:] != (sch.num_points, 2):
    raise ValueError(f"landmarks_gt must be [B, {sch.num_points}, 2] for scheme "
                     f"{sch.name!r}, got shape {gt.shape}")
  b = gt.shape[0]
  vis = np.ones(gt.shape[:2], bool) if visible is None else np.asarray(visible, bool)
  if vis.shape != gt.shape[:2]:
    raise ValueError(f"visible must be [B, N] = {gt.shape[:2]}, got {vis.shape}")
  if kind in ("box", "face_size"):
    return _box_size(boxes, b)
  if kind == "inter_pupil":
    centres = []
    for idx in sch.pupils:
      idx = list(idx)
      v = vis[:, idx].astype(np.float64)
      cnt = v.sum(1)
      with np.errstate(invalid="ignore", divide="ignore"):
        c = np.einsum("bn,bnc->bc", v, np.nan_to_num(gt[:, idx])) / cnt[:, None]
      centres.append(np.where(cnt[:, None] > 0, c, np.nan))
    return np.linalg.norm(centres[0] - centres[1], axis=-1)
  if kind == "inter_ocular":
    if sch.outer_eye_corners is None:
      raise ValueError(f"scheme {sch.name!r} has no outer eye corners: use normaliser "
                       "'inter_pupil' or 'face_size' instead of 'inter_ocular'")
    i, j = sch.outer_eye_corners
    d = np.linalg.norm(gt[:, i] - gt[:, j], axis=-1)
    return np.where(vis[:, i] & vis[:, j], d, np.nan)
  raise ValueError(f"unknown normaliser {kind!r}: use one of {NORMALISERS}")


def nrmse_per_image(pred, gt, visible, norm) -> np.ndarray:
  """Per-image normalised error ``[B]`` (§4.1): mean over visible points of ``||p - g|| / norm``.

  Images without a visible point get NaN (excluded by the summaries, which count them). A
  non-positive or non-finite normaliser for an image *with* visible points is an error.
  """
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  vis = np.asarray(visible, bool)
  norm = np.asarray(norm, np.float64).reshape(-1)
  if pred.shape != gt.shape or gt.ndim != 3 or gt.shape[-1] != 2:
    raise ValueError(f"pred and gt must both be [B, N, 2], got {pred.shape} and {gt.shape}")
  if vis.shape != gt.shape[:2] or norm.shape != gt.shape[:1]:
    raise ValueError(f"visible must be [B, N] = {gt.shape[:2]} and norm [B] = {gt.shape[:1]}, "
                     f"got {vis.shape} and {norm.shape}")
  count = vis.sum(1)
  bad = (count > 0) & ~(np.isfinite(norm) & (norm > 0))
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise ValueError(f"image {i} (and {int(bad.sum()) - 1} more) has visible landmarks but a "
                     f"normaliser of {norm[i]}: check its box / eye points")
  err = np.linalg.norm(np.where(vis[..., None], pred - gt, 0.0), axis=-1)
  if not np.all(np.isfinite(err)):
    raise ValueError("non-finite predicted or ground-truth coordinates at visible points")
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = err.sum(1) / count
    return np.where(count > 0, mean / np.where(bad | (count == 0), 1.0, norm), np.nan)


def _finite(errors) -> np.ndarray:
  e = np.asarray(errors, np.float64).reshape(-1)
  return e[np.isfinite(e)]


def ced(errors, max_error: float = 0.08, num: int = 801):
  """Cumulative error distribution: ``(thresholds [num], fraction [num])``.

  ``fraction[k]`` = share of the (finite) per-image errors ``<= thresholds[k]``, thresholds evenly
  spaced on ``[0, max_error]``. NaN errors (images without visible points) are left out.
  """
  e = np.sort(_finite(errors))
  t = np.linspace(0.0, float(max_error), int(num))
  if len(e) == 0:
    return t, np.full_like(t, np.nan)
  return t, np.searchsorted(e, t, side="right") / len(e)


def auc(errors, threshold: float) -> float:
  """Area under the CED from 0 to ``threshold``, divided by ``threshold``, in percent.

  Computed exactly: the CED is the step function ``F(e) = #{err_i <= e} / n``, so
  ``int_0^T F(e) de = (1/n) sum_i max(0, T - err_i)``. (Sampled-curve implementations agree up to
  their step size.) NaN errors are left out; no errors: NaN.
  """
  e = _finite(errors)
  if threshold <= 0:
    raise ValueError(f"threshold must be > 0, got {threshold}")
  if len(e) == 0:
    return float("nan")
  return float(100.0 * np.clip(threshold - e, 0.0, None).sum() / (len(e) * threshold))


def failure_rate(errors, threshold: float) -> float:
  """Percentage of (finite) per-image errors ``> threshold``; NaN without errors."""
  e = _finite(errors)
  return float("nan") if len(e) == 0 else float(100.0 * np.mean(e > threshold))


def landmark_metrics(pred, gt, visible, boxes, scheme_name: str, normaliser: str | None = None,
                     return_errors: bool = False) -> dict:
  """Table 1b-style summary of a landmark test set.

  Args:
    pred, gt: ``[B, N, 2]``; visible: ``[B, N]`` bool; boxes: ``[B, 4]`` xyxy GT face boxes
      (None is fine for the eye-distance normalisers).
    scheme_name: '68', '19' or '5'.
    normaliser: one of ``NORMALISERS``; None: the paper's choice for the scheme
      (``DEFAULT_NORMALISER``: 19 -> 'box', 68 -> 'inter_pupil', 5 -> 'face_size'). For 300W pass
      'inter_pupil' (the paper) or 'inter_ocular' (the 300W challenge).
    return_errors: also return the per-image errors under ``'errors'`` (float64 ``[B]``, NaN for
      excluded images), e.g. for ``ced_plot_png``.

  Returns:
    dict: ``nrmse`` (mean per-image error in percent), ``nrmse_std`` (population std, percent),
    ``auc@0.07``, ``auc@0.08``, ``failure@0.07``, ``failure@0.08`` (percent), ``num_images``
    (images scored), ``num_excluded`` (images without visible points or normaliser). All values
    are numbers (callers log them with ``float``); the normaliser used is
    ``normaliser or DEFAULT_NORMALISER[scheme_name]``.
  """
  sch = get_scheme(scheme_name)
  kind = DEFAULT_NORMALISER[sch.name] if normaliser is None else normaliser
  norm = normalisers(gt, boxes, sch.name, kind, visible=visible)
  vis = np.asarray(visible, bool)
  # An image whose normaliser is undefined (a missing pupil) is excluded like one without points.
  vis = vis & np.isfinite(norm)[:, None]
  errors = nrmse_per_image(pred, gt, vis, norm)
  e = _finite(errors)
  out = {
      "nrmse": float(100.0 * e.mean()) if len(e) else float("nan"),
      "nrmse_std": float(100.0 * e.std()) if len(e) else float("nan"),
      "auc@0.07": auc(errors, 0.07),
      "auc@0.08": auc(errors, 0.08),
      "failure@0.07": failure_rate(errors, 0.07),
      "failure@0.08": failure_rate(errors, 0.08),
      "num_images": int(len(e)),
      "num_excluded": int(len(errors) - len(e)),
  }
  if return_errors:
    out["errors"] = errors
  return out


# ---------------------------------------------------------------------------- CED plot (PIL)
_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def ced_plot_png(curves: dict, path=None, max_error: float = 0.08, size=(640, 480),
                 title: str = "Cumulative error distribution") -> np.ndarray:
  """Draws the CED curves (one per entry of ``curves``: name -> per-image errors) with PIL.

  x: normalised error in ``[0, max_error]``; y: fraction of images with error <= x, in ``[0, 1]``.
  Each curve is the exact step function, labelled in the legend with its AUC at ``max_error``.
  Written to ``path`` as PNG when given. Returns the uint8 ``[H, W, 3]`` picture.
  """
  from PIL import Image, ImageDraw, ImageFont

  if not curves:
    raise ValueError("ced_plot_png needs at least one curve")
  if max_error <= 0:
    raise ValueError(f"max_error must be > 0, got {max_error}")
  width, height = int(size[0]), int(size[1])
  im = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(im)
  try:
    font = ImageFont.load_default(size=13)
  except TypeError:   # Pillow < 10.1
    font = ImageFont.load_default()
  left, right, top, bottom = 70, 20, 36, 56
  x0, x1, y0, y1 = left, width - right, top, height - bottom   # plot area (y0 top)

  def px(e):
    return x0 + (x1 - x0) * float(e) / max_error

  def py(f):
    return y1 - (y1 - y0) * float(f)

  def text_centred(xy, s, fill=(0, 0, 0)):
    bbox = draw.textbbox((0, 0), s, font=font)
    draw.text((xy[0] - (bbox[2] - bbox[0]) / 2, xy[1]), s, fill=fill, font=font)

  # Grid and ticks: x every 0.01 (or 10 ticks), y every 0.1.
  n_x = int(round(max_error / 0.01)) if abs(max_error / 0.01 - round(max_error / 0.01)) < 1e-9 \
      and max_error / 0.01 <= 12 else 8
  for k in range(n_x + 1):
    e = max_error * k / n_x
    draw.line([(px(e), y0), (px(e), y1)], fill=(230, 230, 230))
    draw.line([(px(e), y1), (px(e), y1 + 5)], fill=(0, 0, 0))
    text_centred((px(e), y1 + 7), f"{e:.2f}" if max_error >= 0.02 else f"{e:.3f}")
  for k in range(11):
    f = k / 10
    draw.line([(x0, py(f)), (x1, py(f))], fill=(230, 230, 230))
    draw.line([(x0 - 5, py(f)), (x0, py(f))], fill=(0, 0, 0))
    s = f"{f:.1f}"
    bbox = draw.textbbox((0, 0), s, font=font)
    draw.text((x0 - 8 - (bbox[2] - bbox[0]), py(f) - (bbox[3] - bbox[1]) / 2 - 2), s,
              fill=(0, 0, 0), font=font)
  draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
  text_centred(((x0 + x1) / 2, height - 24), "normalised error (NRMSE)")
  text_centred((width / 2, 10), title)
  # Rotated y label.
  label = "fraction of images"
  bbox = draw.textbbox((0, 0), label, font=font)
  tmp = Image.new("RGB", (bbox[2] + 4, bbox[3] + 4), (255, 255, 255))
  ImageDraw.Draw(tmp).text((2, 0), label, fill=(0, 0, 0), font=font)
  tmp = tmp.rotate(90, expand=True)
  im.paste(tmp, (8, int((y0 + y1) / 2 - tmp.size[1] / 2)))

  # Curves: exact step functions, clipped to [0, max_error].
  entries = []
  for i, (name, errors) in enumerate(curves.items()):
    colour = _COLOURS[i % len(_COLOURS)]
    e = np.sort(_finite(errors))
    if len(e) == 0:
      entries.append((f"{name} (no images)", colour))
      continue
    frac = np.arange(1, len(e) + 1) / len(e)
    pts = [(px(0.0), py(0.0))]
    level = 0.0
    for ev, fv in zip(e, frac):
      if ev > max_error:
        break
      pts += [(px(ev), py(level)), (px(ev), py(fv))]
      level = fv
    pts.append((px(max_error), py(level)))
    draw.line(pts, fill=colour, width=2)
    entries.append((f"{name}  auc@{max_error:g}={auc(e, max_error):.2f}%", colour))
  # Legend (upper left of the plot area; CED curves rise to the right).
  line_h = 18
  tw = max(draw.textbbox((0, 0), s, font=font)[2] for s, _ in entries)
  lx, ly = x0 + 10, y0 + 10
  draw.rectangle([lx, ly, lx + tw + 44, ly + line_h * len(entries) + 6], fill=(255, 255, 255),
                 outline=(120, 120, 120))
  for k, (s, colour) in enumerate(entries):
    yy = ly + 6 + k * line_h + line_h / 2 - 3
    draw.line([(lx + 6, yy), (lx + 30, yy)], fill=colour, width=3)
    draw.text((lx + 36, yy - 8), s, fill=(0, 0, 0), font=font)
  arr = np.asarray(im, np.uint8).copy()
  if path is not None:
    im.save(str(path), format="PNG")
  return arr


def summary_line(metrics: dict, normaliser: str = "") -> str:
  """``'NRMSE 4.23 +- 4.52  auc@0.07 50.84  auc@0.08 55.75  (n=4386, box)'`` (Table 1b layout)."""
  m = metrics
  fmt = lambda v: "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"
  return (f"NRMSE {fmt(m['nrmse'])} +- {fmt(m['nrmse_std'])}  auc@0.07 {fmt(m['auc@0.07'])}  "
          f"auc@0.08 {fmt(m['auc@0.08'])}  (n={m['num_images']}"
          + (f", {normaliser})" if normaliser else ")"))
