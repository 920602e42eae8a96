"""Does compiling the training networks pay? `nn.Module.compile` (inductor, in place: state dicts keep their keys) on
the generator and the critic of the learner's fast path, against the same learner run eagerly.

The VGG network of the loss is not compiled: under autocast `VGGLoss` computes with a copy made in the compute dtype,
and compiling the loss module whole breaks its graph at that copy. Two parts:

- **the same math**: a small learner (32x32, batch 4, `ngf` 8, `ndf` 16, VGG with random weights, no style encoder,
  float32, `steps='critic_first'`), eager and compiled from the same seed. With the learning rate at 0, the loss and
  the parameter gradients of the first critic step and of the first generator step (the critic step cannot change
  what the generator step sees). With the learning rate at 2e-4, the largest difference of a parameter after 3 batches,
  in each network's learning rate (TTUR's), next to the same eager learner with contiguous tensors instead of
  channels-last: a change of rounding alone, as the yardstick of how far rounding carries in 3 steps of Adam.
- **speed**: on the issue's setup (64x64, batch 8, `ngf` 16, `ndf` 64, VGG on, no encoder, 8 classes, synthetic
  batches in memory), for the fast path in the precision this machine trains in (`fast_precision`) with
  `steps='critic_first'`: an eager and a compiled learner in one process. First each trains one epoch (the compiled
  one compiles then: its time, in a fresh inductor cache, is the cost of compiling), then `--rounds` rounds in which
  each trains a short epoch (3 iterations) in turn.

  python nbs/results/compiled_training.py [--rounds 6]

Results go to nbs/results/compiled_training.json, which `09e_fast` shows.
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, tempfile, time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent/'compiled_training.json'
SETUP = dict(size=64, bs=8, ngf=16, use_vae=False, vgg=True, device='cpu')

def compile_networks(learn):
    "Compile `learn`'s generator network and critic in place (`nn.Module.compile`)."
    learn.model.generator.net.compile(); learn.model.critic.compile()
    return learn

def small_learner(compiled:bool, n_batches:int, **kwargs):
    "A small float32 learner, the same weights and batches every call."
    from gaugan_fastai.bench import synthetic_dls
    from gaugan_fastai.learner import gaugan_learner
    from gaugan_fastai.losses import VGGLoss
    dls = synthetic_dls(n_classes=5, size=32, bs=4, n_batches=n_batches, device='cpu')
    learn = gaugan_learner(dls, ngf=8, ndf=16, use_vae=False, vgg=VGGLoss(pretrained=False), precision='fp32',
                           checkpoint=None, steps='critic_first', **kwargs)
    return compile_networks(learn) if compiled else learn

def first_steps(compiled:bool)->dict:
    "Network name -> (loss, all parameter gradients) of the first step of each network, with the learning rate at 0."
    import torch
    from fastai.callback.core import Callback
    from gaugan_fastai.core import seeded
    class FirstSteps(Callback):
        order = 50
        def __init__(self): self.seen = {}
        def after_backward(self):
            net = 'generator' if self.model.gen_mode else 'critic'
            grads = [p.grad.float().flatten() for p in getattr(self.model, net).parameters() if p.grad is not None]
            self.seen.setdefault(net, (self.loss.detach().float(), torch.cat(grads)))
    with seeded(0):
        learn, cb = small_learner(compiled, 2), FirstSteps()
        with learn.no_logging(), learn.no_bar(): learn.fit(1, lr=0., cbs=cb)
    return cb.seen

def trained_parameters(compiled:bool, **kwargs)->dict:
    "Network name -> (its parameters flattened after 3 batches at a learning rate of 2e-4, its learning rate under TTUR)."
    import torch
    from gaugan_fastai.core import seeded
    with seeded(0):
        learn = small_learner(compiled, 3, **kwargs)
        with learn.no_logging(), learn.no_bar(): learn.fit(1, lr=2e-4)
    return {net: (torch.cat([p.detach().float().flatten() for p in getattr(learn.model, net).parameters()]), 2e-4 * mult)
            for net, mult in zip(('generator', 'critic'), learn.ttur.mults)}

def rel_err(a, b)->float:
    "Largest difference between tensors `a` and `b`, relative to the largest `b`."
    return float((a - b).abs().max() / b.abs().max())

def same_math()->dict:
    eager, compiled = first_steps(False), first_steps(True)
    out = {f'{net} first step, lr 0': {'loss': rel_err(compiled[net][0], eager[net][0]),
                                       'gradients': rel_err(compiled[net][1], eager[net][1])} for net in ('critic', 'generator')}
    eager_params = trained_parameters(False)
    for name, params in (('compiled vs eager', trained_parameters(True)),
                         ('contiguous vs channels-last, both eager', trained_parameters(False, channels_last=False))):
        out[f'parameters after 3 batches, lr 2e-4: {name}'] = {
            net: {'largest difference': float((p - eager_params[net][0]).abs().max()), 'in learning rates': float((p - eager_params[net][0]).abs().max() / lr)}
            for net, (p, lr) in params.items()}
    return out

def images_per_s(learn, iters:int)->float:
    "Train `learn` one epoch, return its training images/s (`iters` iterations of `bs` images)."
    t0 = time.perf_counter()
    with learn.no_logging(), learn.no_bar(): learn.fit(1)
    return iters * SETUP['bs'] / (time.perf_counter() - t0)

def speed(rounds:int, iters:int=3)->dict:
    from gaugan_fastai.bench import synthetic_dls
    from gaugan_fastai.learner import gaugan_learner
    from gaugan_fastai.losses import VGGLoss
    from gaugan_fastai.fast import fast_precision
    precision, learners, first_epoch_s = fast_precision('cpu'), {}, {}
    for name in ('eager', 'compiled'):
        dls = synthetic_dls(8, SETUP['size'], SETUP['bs'], iters, SETUP['device'])
        learn = gaugan_learner(dls, ngf=SETUP['ngf'], use_vae=SETUP['use_vae'], vgg=VGGLoss(pretrained=False), checkpoint=None,
                               precision=precision, steps='critic_first')
        learners[name] = compile_networks(learn) if name == 'compiled' else learn
        t0 = time.perf_counter(); images_per_s(learners[name], iters); first_epoch_s[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: first epoch {first_epoch_s[name]} s", flush=True)
    runs = {name: [] for name in learners}
    for r in range(rounds):
        for name, learn in learners.items(): runs[name].append(round(images_per_s(learn, iters), 3))
        print(f"round {r + 1}: " + ', '.join(f"{n} {v[-1]:.2f}" for n, v in runs.items()), flush=True)
    return {'precision': precision, 'steps': 'critic_first', 'first_epoch_s': first_epoch_s, 'images_per_s': runs,
            'median': {n: statistics.median(v) for n, v in runs.items()}}

def cpu_name()->str:
    "The CPU's model name as Linux reports it (the architecture elsewhere)."
    info = Path('/proc/cpuinfo')
    names = [l.split(':', 1)[1].strip() for l in info.read_text().splitlines() if l.startswith('model name')] if info.exists() else []
    return names[0] if names else platform.machine()

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=6)
    a = ap.parse_args()
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp()  # a fresh cache: the first epoch pays the whole compilation
    import torch
    out = {'setup': SETUP, 'date': time.strftime('%Y-%m-%d'),
           'machine': f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
           'same_math': same_math(), 'speed': speed(a.rounds)}
    RESULTS.write_text(json.dumps(out, indent=1) + '\n')
    print(json.dumps(out['same_math'], indent=1)); print(f"wrote {RESULTS}")

if __name__ == '__main__': main()
