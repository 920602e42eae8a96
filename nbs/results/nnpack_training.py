"""NNPACK's fast convolutions for training, measured on the issue's training setup: 64x64, batch 8, `ngf` 16, VGG
on (random weights), no encoder, the fast path this CPU gets from `bench_plain_fast` (`fast_precision`, channels-last,
`steps='critic_first'`).

- **iteration**: `bench_gaugan` of that setup, seconds per iteration (one critic and one generator step).
- **convolutions**: every call of a 3x3 stride-1 convolution in the second iteration of the same learner (the
  generator's and VGG's: the critic's are 4x4), by input shape, weight shape and whether it is differentiated (the
  generator's, VGG's on the fake images); those that are not (VGG on the real photos) only run forward. Each is timed, the best of three, through oneDNN, in the memory format the learner gave it, and
  through NNPACK (`torch._nnpack_spatial_convolution` on a contiguous copy, as `NNPACKConv2d` runs it): forward, and
  forward and backward where the learner differentiates it. NNPACK computes only the forward pass; PyTorch
  differentiates it with its generic convolution backward.

  python nbs/results/nnpack_training.py

Results go to nbs/results/nnpack_training.json, which `09e_fast` shows.
"""
from __future__ import annotations
import json, time
from collections import Counter
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
from fastai.callback.core import Callback
from gaugan_fastai.bench import bench_gaugan, synthetic_dls
from gaugan_fastai.fast import fast_precision
from gaugan_fastai.learner import gaugan_learner
from gaugan_fastai.losses import VGGLoss
from stacked_shared import machine  # beside this script

RESULTS = Path(__file__).resolve().parent/'nnpack_training.json'
SETUP = dict(size=64, bs=8, ngf=16, use_vae=False, precision=fast_precision('cpu'), steps='critic_first')

def best_ms(fn, calls=3):
    fn(); best = float('inf')
    for _ in range(calls):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return 1000 * best

def conv_calls():
    "Counter of (input shape, weight shape, channels-last, differentiated) over the 3x3 stride-1 convolutions of one iteration."
    dls = synthetic_dls(8, SETUP['size'], SETUP['bs'], 2, 'cpu')
    vgg = VGGLoss(pretrained=False)
    learn = gaugan_learner(dls, ngf=SETUP['ngf'], use_vae=False, vgg=vgg, checkpoint=None, precision=SETUP['precision'], steps=SETUP['steps'])
    calls, hooks = Counter(), []
    def record(m, args, out):
        x = args[0]
        calls.update([(tuple(x.shape), tuple(m.weight.shape), x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(),
                       torch.is_grad_enabled() and (x.requires_grad or m.weight.requires_grad))])
    class RecordSecond(Callback):
        "Hook the convolutions for the second iteration: fastai's batches 2 and 3 (`PairedSteps` shows each batch twice, critic step first)."
        def before_batch(self):
            if self.training and self.iter == 2:
                hooks.extend(m.register_forward_hook(record) for m in {*learn.model.modules(), *vgg.modules()}
                             if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1))
        def after_batch(self):
            if self.iter != 3: return
            for h in hooks: h.remove()
            hooks.clear()
    with learn.no_logging(), learn.no_bar(): learn.fit(1, cbs=RecordSecond())
    return calls

def conv_times(calls):
    "Per call shape: how many per iteration, and ms through oneDNN and through NNPACK (forward, or forward and backward)."
    rows = []
    for (xs, ws, channels_last, grad), n in calls.items():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x, w, b = torch.randn(xs).contiguous(memory_format=fmt), torch.randn(ws).contiguous(memory_format=fmt), torch.zeros(ws[0])
        onednn = lambda x, w, b: F.conv2d(x, w, b, padding=1)
        nnpack = lambda x, w, b: torch._nnpack_spatial_convolution(x.contiguous(), w.contiguous(), b, [1, 1])
        if grad:
            for t in (x, w, b): t.requires_grad_()
            g = torch.randn(xs[0], ws[0], *xs[2:]).contiguous(memory_format=fmt)
            times = [best_ms(lambda: conv(x, w, b).backward(g)) for conv in (onednn, nnpack)]
        else:
            with torch.no_grad(): times = [best_ms(lambda: conv(x, w, b)) for conv in (onednn, nnpack)]
        rows.append(dict(input=xs, weight=ws, channels_last=channels_last, differentiated=grad, per_iteration=n,
                         onednn_ms=times[0], nnpack_ms=times[1]))
    return sorted(rows, key=lambda r: -r['per_iteration'] * r['onednn_ms'])

def main():
    torch._nnpack_available()  # initialises NNPACK
    bench = bench_gaugan(vgg=True, n_iters=5, device='cpu', **SETUP)
    rows = conv_times(conv_calls())
    total = lambda key: sum(r['per_iteration'] * r[key] for r in rows)
    best = sum(r['per_iteration'] * min(r['onednn_ms'], r['nnpack_ms']) for r in rows)
    result = dict(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), machine=machine(), torch=torch.__version__,
                  setup=SETUP, iteration_ms=1000 * bench['train_s_per_iter'], train_images_per_s=bench['train_images_per_s'],
                  convs=rows, convs_onednn_ms=total('onednn_ms'), convs_nnpack_ms=total('nnpack_ms'), convs_faster_of_the_two_ms=best)
    RESULTS.write_text(json.dumps(result, indent=1) + '\n')
    for r in rows: print(f"{str(r['input']):18s} {str(r['weight']):18s} {'grad' if r['differentiated'] else 'fwd '} x{r['per_iteration']:2d} "
                         f"oneDNN {r['onednn_ms']:7.2f} NNPACK {r['nnpack_ms']:7.2f} ms")
    print(json.dumps({k: result[k] for k in ('date', 'machine', 'iteration_ms', 'convs_onednn_ms', 'convs_nnpack_ms', 'convs_faster_of_the_two_ms')}, indent=1))

if __name__ == '__main__':
    main()
