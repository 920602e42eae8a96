"""NNPACK's fast convolutions (`nnpack_convs`) for float32 generation, measured on the issue's generator: 256x256,
`ngf` 64, one image, a `fast_generator` copy in float32.

- **convolutions**: for each map size of the generator, its 3x3 convolutions, those that `nnpack_convs` switches (at
  least 64 channels in and out) and the narrow ones (the label maps', the last), with the shapes the generator runs
  them at, through oneDNN (channels-last, as `fast_synthesizer` runs them) and through NNPACK; each the best of
  three calls. This is what sets which convolutions `nnpack_convs` switches and `min_pixels`.
- **generation**: the whole copy, channels-last (`fast_synthesizer`'s default), the same compiled with inductor
  (`compiled=True`), contiguous, and the contiguous copy with `nnpack_convs`; in turn, round after round, in one
  process. Errors are the largest difference from the plain generator's float32 image (eval mode, `no_grad`),
  relative to its largest pixel value.

The generator has weights of order one and batch-norm statistics averaged over a few training-mode forwards, so its
images are not saturated (a saturated `tanh` hides differences).

  python nbs/results/nnpack_generation.py [--rounds 8]

Results go to nbs/results/nnpack_generation.json, which `09e_fast` shows.
"""
from __future__ import annotations
import argparse, json, statistics, time
from collections import Counter
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
from gaugan_fastai.fast import fast_generator, nnpack_convs
from gaugan_fastai.generator import SPADEGenerator
from gaugan_fastai.layers import init_weights
from stacked_shared import label_map, machine  # beside this script

RESULTS = Path(__file__).resolve().parent/'nnpack_generation.json'

def generator(size=256, ngf=64, n_classes=8):
    "A generator with weights of order one, its batch-norm statistics the average over three training-mode forwards."
    torch.manual_seed(0)
    g = init_weights(SPADEGenerator(n_classes, ngf=ngf, crop_size=size, use_vae=False), gain=1.)
    for m in g.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm): m.momentum = None  # a cumulative average
    with torch.no_grad():
        for s in range(3): g(label_map(1, n_classes, size, seed=10 + s))
    return g.eval()

def best_ms(fn, calls=3):
    fn(); best = float('inf')
    for _ in range(calls):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return 1000 * best

def conv_shapes(fast, seg):
    "(input shape, weight shape) of every call of a 3x3 convolution of `fast`, in one generation."
    shapes, hooks = Counter(), []
    for m in fast.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            hooks.append(m.register_forward_hook(lambda m, args, out: shapes.update([(tuple(args[0].shape), tuple(m.weight.shape))])))
    fast(seg)
    for h in hooks: h.remove()
    return shapes

def conv_times(shapes):
    "Per map size, for the convolutions `nnpack_convs` switches and for the others: ms through oneDNN (channels-last) and NNPACK."
    rows = {}
    with torch.inference_mode():
        for (xs, ws), n in shapes.items():
            x, w, b = torch.randn(xs), torch.randn(ws) / (3 * ws[1] ** 0.5), torch.zeros(ws[0])
            xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
            onednn = n * best_ms(lambda: F.conv2d(xc, wc, b, padding=1))
            nnpack = n * best_ms(lambda: torch._nnpack_spatial_convolution(x, w, b, [1, 1]))
            key = f"{xs[-2]}x{xs[-1]} {'switched' if min(ws[:2]) >= 64 else 'narrow'}"
            rows[key] = [a + c for a, c in zip(rows.get(key, [0., 0.]), (onednn, nnpack))]
    return dict(sorted(rows.items(), key=lambda kv: (int(kv[0].split('x')[0]), kv[0])))

def main(rounds:int):
    g, seg = generator(), label_map(1, 8, 256, seed=5)
    with torch.no_grad(): expected = g(seg)
    print(f"saturated pixels (|x| > 0.99) of the plain image: {float((expected.abs() > 0.99).float().mean()):.1%}")
    convs = conv_times(conv_shapes(fast_generator(g, 'fp32'), seg))
    for key, (a, c) in convs.items(): print(f"{key:>18s} oneDNN {a:6.0f} ms  NNPACK {c:6.0f} ms")
    compiled = fast_generator(g, 'fp32', channels_last=True, compiled=True)
    t0 = time.perf_counter(); compiled(seg); compile_s = time.perf_counter() - t0
    print(f"compiling the channels-last copy: {compile_s:.0f} s")
    paths = {'fp32 channels-last': fast_generator(g, 'fp32', channels_last=True),
             'fp32 channels-last compiled': compiled,
             'fp32 contiguous': fast_generator(g, 'fp32'),
             'fp32 contiguous, NNPACK': nnpack_convs(fast_generator(g, 'fp32'))}
    errors = {name: float((f(seg) - expected).abs().max() / expected.abs().max()) for name, f in paths.items()}
    ms = {name: [] for name in paths}
    for r in range(rounds):
        for name, f in paths.items():
            t0 = time.perf_counter(); f(seg); ms[name].append(1000 * (time.perf_counter() - t0))
        print(f"round {r + 1}: " + ', '.join(f"{name} {v[-1]:.0f} ms" for name, v in ms.items()))
    median = {name: statistics.median(v) for name, v in ms.items()}
    result = dict(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), machine=machine(), torch=torch.__version__,
                  convs_ms=convs, compile_s=compile_s, ms=ms, median_ms=median, errors=errors)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ('date', 'machine', 'median_ms', 'errors')}, indent=1))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--rounds', type=int, default=8)
    main(p.parse_args().rounds)
