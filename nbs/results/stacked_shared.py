"""The issue's second fusion, measured: one convolution for the `mlp_shared` convolutions of a residual block's SPADE
layers (they all read the same resized label map), on top of `FusedSPADEResBlock` (training) and of the frozen
generation copy (`fast_generator`).

The variant is built here, not in the library: it stacks the blocks' shared weights along the output channels,
runs one convolution and one ReLU, and splits the hidden map into one part per SPADE layer. Both measurements
interleave what they compare, round after round, in one process:

- **training**: a generator's forward and backward pass (64x64, batch 8, `ngf` 16, 8 classes, float32,
  channels-last as the learner runs it), plain `SPADEResBlock`s, `FusedSPADEResBlock`s, and fused with the
  shared convolutions stacked; first the outputs and gradients of the three are compared;
- **generation**: `fast_generator` at 256x256, `ngf` 64, batch 1 (float32, channels-last), with and without the
  shared convolutions stacked.

  python nbs/results/stacked_shared.py [--rounds 8]

Results go to nbs/results/stacked_shared.json, which `09e_fast` shows. Float32 only: on a CPU without AMX or
AVX512-BF16 (as the one it ran on) bfloat16 is emulated, and the learner trains in float32 there.
"""
from __future__ import annotations
import argparse, copy, json, os, platform, statistics, time
from pathlib import Path
import torch, torch.nn.functional as F
from gaugan_fastai.fast import FusedSPADEResBlock, FrozenSPADEResBlock, fuse, fast_generator
from gaugan_fastai.generator import SPADEGenerator
from gaugan_fastai.layers import init_weights

RESULTS = Path(__file__).resolve().parent/'stacked_shared.json'

def stacked_modulations(self, seg, size):
    "Per SPADE layer of the block, its (`gamma`, `beta`) maps; the shared convolutions run as one."
    seg = F.interpolate(seg, size=tuple(size), mode='nearest')
    convs = [n.mlp_shared[0] for n in self.norms()]
    w, b = torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs])
    hidden = F.relu(F.conv2d(seg, w, b, padding=w.shape[-1] // 2)).chunk(len(convs), 1)
    return [F.conv2d(h, w, b, padding=w.shape[-1] // 2).chunk(2, 1) for h, (w, b) in zip(hidden, self.modulation_weights())]

class StackedSharedBlock(FusedSPADEResBlock): modulations = stacked_modulations
class StackedSharedFrozenBlock(FrozenSPADEResBlock): modulations = stacked_modulations

def retype(model, cls):
    "Switch every fused (or frozen) SPADE residual block of `model` to `cls`, in place."
    for m in model.modules():
        if isinstance(m, FusedSPADEResBlock): m.__class__ = cls
    return model

def label_map(bs, n_classes, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return F.one_hot(torch.randint(0, n_classes, (bs, size, size), generator=g), n_classes).permute(0, 3, 1, 2).float().contiguous()

def rel_err(a, b):
    "Largest difference of `a` from `b` (lists of tensors taken together), relative to the largest `b`."
    a, b = torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b])
    return float((a - b).abs().max() / b.abs().max())

def interleaved_ms(fns:dict, rounds:int, calls:int=1)->dict:
    "Milliseconds per call of each function of `fns`, `rounds` times, interleaved, after one warm-up call each."
    for fn in fns.values(): fn()
    runs = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls): fn()
            runs[name].append(round(1000 * (time.perf_counter() - t0) / calls, 1))
    return runs

def training(rounds:int)->dict:
    torch.manual_seed(0)
    g = init_weights(SPADEGenerator(8, ngf=16, crop_size=64, use_vae=False), gain=1.)
    nets = {'plain': copy.deepcopy(g), 'fused': fuse(copy.deepcopy(g)), 'fused, shared stacked': retype(fuse(copy.deepcopy(g)), StackedSharedBlock)}
    seg = label_map(8, 8, 64).contiguous(memory_format=torch.channels_last)
    for n in nets.values(): n.to(memory_format=torch.channels_last)
    def step(n):
        n.zero_grad()
        out = n(seg)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), [p.grad.clone() for p in n.parameters()]
    first = {k: step(copy.deepcopy(n)) for k, n in nets.items()}
    errors = {k: {'output': rel_err([first[k][0]], [first['plain'][0]]), 'gradients': rel_err(first[k][1], first['plain'][1])}
              for k in nets if k != 'plain'}
    return {'errors_vs_plain': errors, 'ms': interleaved_ms({k: (lambda n=n: step(n)) for k, n in nets.items()}, rounds, calls=2)}

def generation(rounds:int)->dict:
    torch.manual_seed(0)
    g = init_weights(SPADEGenerator(8, ngf=64, crop_size=256, use_vae=False), gain=1.).eval()
    seg = label_map(1, 8, 256)
    copies = {'frozen': fast_generator(g, 'fp32', channels_last=True),
              'frozen, shared stacked': fast_generator(g, 'fp32', channels_last=True)}
    retype(copies['frozen, shared stacked'].net, StackedSharedFrozenBlock)
    error = rel_err([copies['frozen, shared stacked'](seg)], [copies['frozen'](seg)])
    return {'error_vs_frozen': error, 'ms': interleaved_ms({k: (lambda f=f: f(seg)) for k, f in copies.items()}, rounds)}

def machine()->str:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=8)
    rounds = ap.parse_args().rounds
    res = {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'machine': machine(),
           'training': training(rounds), 'generation': generation(rounds)}
    for part in ('training', 'generation'): res[part]['median_ms'] = {k: statistics.median(v) for k, v in res[part]['ms'].items()}
    RESULTS.write_text(json.dumps(res, indent=1) + '\n')
    print(json.dumps({p: res[p]['median_ms'] for p in ('training', 'generation')}))

if __name__ == '__main__': main()
