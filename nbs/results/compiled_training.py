"""Does compiling the training networks pay? `nn.Module.compile` (inductor, in place: state dicts keep their keys) on
the generator and the critic of the learner's fast path, against the same learner run eagerly.

The VGG network of the loss is not compiled: under autocast `VGGLoss` computes with a copy made in the compute dtype,
and compiling the loss module whole breaks its graph at that copy. Two parts, in this order:

- **speed**: on the issue's setup (`SPEED_SETUP`: 64x64, batch 8, `ngf` 16, `ndf` 64, VGG with random weights, no
  style encoder, 8 classes, synthetic batches in memory), for the fast path in the precision this machine trains in
  (`fast_precision`) with `steps='critic_first'`: an eager and a compiled learner in one process. First each trains
  one epoch of 3 batches (the compiled one compiles then, the first compilation of this process, in a fresh inductor
  cache), then `--rounds` rounds in which each trains such an epoch in turn. Each batch is a critic step and a
  generator step.
- **the same math**: a small learner (`SMALL_SETUP`: 32x32, batch 4, `ngf` 8, `ndf` 16, VGG with random weights, no
  style encoder, 5 classes, float32, `steps='critic_first'`), eager and compiled from the same seed. With the
  learning rate at 0 (no step moves a weight, so both runs' steps see the same networks), the loss and the parameter
  gradients of the first critic step and of the first generator step. With the base learning rate at `DRIFT_LR`
  (2e-4), after `DRIFT_BATCHES` (3) batches: the largest difference of a parameter, also in the network's learning
  rate (TTUR's), and of a buffer (batch-norm statistics, spectral-norm vectors), next to the same eager learner with
  contiguous tensors instead of channels-last: a change of rounding alone, as the yardstick of how far rounding
  carries in those steps.

  python nbs/results/compiled_training.py [--rounds 6]

Results go to nbs/results/compiled_training.json, which `09e_fast` shows.
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, tempfile, time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent/'compiled_training.json'
SPEED_SETUP = dict(size=64, bs=8, ngf=16, ndf=64, n_classes=8, use_vae=False, device='cpu')
SMALL_SETUP = dict(size=32, bs=4, ngf=8, ndf=16, n_classes=5, use_vae=False, device='cpu', precision='fp32')
STEPS = 'critic_first'
LEARNER = dict(vgg='VGGLoss with random weights', channels_last=True, fused_adam=True, steps=STEPS)  # both parts: the learner's fast path
DRIFT_LR, DRIFT_BATCHES = 2e-4, 3  # how long the learners of the drift comparison train, and at which base learning rate

def learner(setup:dict, n_batches:int, compiled:bool, **kwargs):
    "A learner on synthetic batches of `setup`, VGG with random weights, no checkpoints; its generator network and critic compiled in place if `compiled`."
    from gaugan_fastai.bench import synthetic_dls
    from gaugan_fastai.learner import gaugan_learner
    from gaugan_fastai.losses import VGGLoss
    s = dict(setup)
    dls = synthetic_dls(s.pop('n_classes'), s.pop('size'), s.pop('bs'), n_batches, s.pop('device'))
    options = dict(s, channels_last=LEARNER['channels_last'], fused_adam=LEARNER['fused_adam'])
    options.update(kwargs)
    learn = gaugan_learner(dls, vgg=VGGLoss(pretrained=False), checkpoint=None, steps=STEPS, **options)
    if compiled: learn.model.generator.net.compile(); learn.model.critic.compile()
    return learn

def train_epoch(learn, **kwargs)->float:
    "Train `learn` one epoch (`kwargs`: passed to `fit`); its wall-clock seconds."
    t0 = time.perf_counter()
    with learn.no_logging(), learn.no_bar(): learn.fit(1, **kwargs)
    return time.perf_counter() - t0

def speed(rounds:int, n_batches:int=3)->dict:
    from gaugan_fastai.fast import fast_precision
    precision, learners, first_epoch_s = fast_precision('cpu'), {}, {}
    for name in ('eager', 'compiled'):
        learners[name] = learner(SPEED_SETUP, n_batches, name == 'compiled', precision=precision)
        first_epoch_s[name] = round(train_epoch(learners[name]), 1)
        print(f"{name}: first epoch {first_epoch_s[name]} s", flush=True)
    runs = {name: [] for name in learners}
    for r in range(rounds):
        for name, learn in learners.items(): runs[name].append(round(n_batches * SPEED_SETUP['bs'] / train_epoch(learn), 3))
        print(f"round {r + 1}: " + ', '.join(f"{n} {v[-1]:.2f}" for n, v in runs.items()), flush=True)
    return {'setup': SPEED_SETUP, 'learner': LEARNER, 'precision': precision, 'batches_per_epoch': n_batches,
            'first_epoch_s': first_epoch_s, 'images_per_s': runs, 'median': {n: statistics.median(v) for n, v in runs.items()}}

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
        learn, cb = learner(SMALL_SETUP, 2, compiled), FirstSteps()
        train_epoch(learn, lr=0., cbs=cb)
    return cb.seen

def trained_state(compiled:bool, **kwargs)->dict:
    "Network name -> (its parameters, its buffers, its learning rate under TTUR) after `DRIFT_BATCHES` batches at the base learning rate `DRIFT_LR`."
    from gaugan_fastai.core import seeded
    with seeded(0):
        learn = learner(SMALL_SETUP, DRIFT_BATCHES, compiled, **kwargs)
        train_epoch(learn, lr=DRIFT_LR)
    return {net: ({k: p.detach().float() for k, p in getattr(learn.model, net).named_parameters()},
                  {k: b.detach().float() for k, b in getattr(learn.model, net).named_buffers() if b.is_floating_point()}, DRIFT_LR * mult)
            for net, mult in zip(('generator', 'critic'), learn.ttur.mults)}

def rel_err(a, b)->float:
    "Largest difference between tensors `a` and `b`, relative to the largest `b`."
    return float((a - b).abs().max() / b.abs().max())

def largest_difference(a:dict, b:dict)->tuple:
    "(largest absolute difference, the name of its tensor) between the same-named tensors of `a` and `b`."
    return max((float((a[k] - b[k]).abs().max()), k) for k in a)

def same_math()->dict:
    eager, compiled = first_steps(False), first_steps(True)
    out = {'setup': SMALL_SETUP, 'learner': LEARNER}
    for net in ('critic', 'generator'):
        out[f'{net} first step, lr 0'] = {'loss': rel_err(compiled[net][0], eager[net][0]), 'gradients': rel_err(compiled[net][1], eager[net][1])}
    eager_state = trained_state(False)
    for name, state in (('compiled vs eager', trained_state(True)),
                        ('contiguous vs channels-last, both eager', trained_state(False, channels_last=False))):
        out[f'after {DRIFT_BATCHES} batches, lr {DRIFT_LR:g}: {name}'] = part = {}
        for net, (params, buffers, lr) in state.items():
            (p_diff, p_name), (b_diff, b_name) = largest_difference(params, eager_state[net][0]), largest_difference(buffers, eager_state[net][1])
            part[net] = {'largest parameter difference': p_diff, 'in learning rates': p_diff / lr, 'in parameter': p_name,
                         'largest buffer difference': b_diff, 'in buffer': b_name}
    return out

def cpu_name()->str:
    "The CPU's model name as Linux reports it (the architecture elsewhere)."
    info = Path('/proc/cpuinfo')
    names = [l.split(':', 1)[1].strip() for l in info.read_text().splitlines() if l.startswith('model name')] if info.exists() else []
    return names[0] if names else platform.machine()

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=6)
    a = ap.parse_args()
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp()  # a fresh cache: the first compiled epoch pays the whole compilation
    import torch
    out = {'date': time.strftime('%Y-%m-%d'), 'machine': f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
           'speed': speed(a.rounds), 'same_math': same_math()}
    RESULTS.write_text(json.dumps(out, indent=1) + '\n')
    print(json.dumps(out['same_math'], indent=1)); print(f"wrote {RESULTS}")

if __name__ == '__main__': main()
