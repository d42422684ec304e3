"""torchvision's RetinaNet R50-FPN train step and inference, for ``jaxdet.tools.benchmark``.

Imported only by the benchmark's side-by-side comparison, and only then imports ``torch``: it
runs where torch and CUDA are available (``unavailable_reason`` says why not otherwise).
``retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=C)`` on synthetic
images of exactly H x W (the model's resize transform is set to keep that size) with ~10 boxes
each; train: SGD (lr 0.01, momentum 0.9, wd 1e-4) under ``torch.autocast`` (bfloat16 where
supported, else float16 with a GradScaler); inference: ``model.eval()`` under the same autocast
and ``torch.no_grad``, including torchvision's post-processing (per-level top-k, decode, NMS).
Each figure is the median of ``steps`` timed iterations after 2 warm-ups, synchronised.
It runs after jaxdet's measurements in the same process: ``python -m jaxdet.tools.benchmark``
turns jax's GPU preallocation off (XLA_PYTHON_CLIENT_PREALLOCATE=false) so that only jaxdet's
peak stays reserved in jax's pool and the rest of the GPU is left to torch.
"""
from __future__ import annotations

import importlib.util
import statistics
import time


def unavailable_reason() -> str:
  """'' if torch with CUDA and torchvision import; else why the comparison is skipped."""
  try:
    import torch
  except ImportError:
    return "torch is not installed"
  if not torch.cuda.is_available():
    return "torch.cuda.is_available() is False"
  if importlib.util.find_spec("torchvision") is None:
    return "torchvision is not installed"
  return ""


def _median_s(fn, steps: int) -> float:
  import torch
  for _ in range(2):
    fn()
  torch.cuda.synchronize()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def run_torchvision(num_classes: int, batch: int, hw: tuple[int, int], steps: int) -> dict:
  """{'train_img_s', 'inference_img_s', 'train_ms', 'inference_ms', 'amp'} at ``hw`` (H, W)."""
  import torch
  from torchvision.models.detection import retinanet_resnet50_fpn
  device = torch.device("cuda")
  amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
  h, w = hw
  model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes,
                                 min_size=min(h, w), max_size=max(h, w)).to(device)
  gen = torch.Generator().manual_seed(0)
  images = torch.rand((batch, 3, h, w), generator=gen).to(device)
  targets = []
  for _ in range(batch):
    n = int(torch.randint(5, 16, (1,), generator=gen))
    xy = torch.rand((n, 2), generator=gen) * torch.tensor([w, h]) * 0.8
    wh = (0.05 + 0.35 * torch.rand((n, 2), generator=gen)) * torch.tensor([w, h])
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w, h]))], 1)
    targets.append({"boxes": boxes.to(device),
                    "labels": torch.randint(0, num_classes, (n,), generator=gen).to(device)})
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
  scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

  def train_step():
    with torch.autocast("cuda", dtype=amp):
      losses = model(list(images), targets)
      loss = sum(losses.values())
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()

  def infer():
    with torch.no_grad(), torch.autocast("cuda", dtype=amp):
      model(list(images))

  model.train()
  train_s = _median_s(train_step, steps)
  model.eval()
  infer_s = _median_s(infer, steps)
  return {"amp": str(amp).replace("torch.", ""), "train_ms": 1e3 * train_s,
          "inference_ms": 1e3 * infer_s, "train_img_s": batch / train_s,
          "inference_img_s": batch / infer_s}
