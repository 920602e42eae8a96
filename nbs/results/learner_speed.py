"""Training images/s of the learner's plain and fast paths, lever by lever, and next to the reference.

Setup (issue "Speed"): 64x64, batch 8, `ngf` 16, `ndf` 64, VGG on (random weights: the same compute), no style
encoder, 8 classes, synthetic batches in memory (`gaugan_fastai.bench`). This machine is shared and its speed
drifts by tens of percent within minutes, so both measurements interleave what they compare:

- **levers**: one learner per configuration in one process, then `--rounds` rounds in which each learner trains one
  short epoch (3 iterations) in turn; a slow spell falls on neighbouring epochs of every configuration alike.
- **reference**: the NVlabs/SPADE reference next to the plain and fast paths, each a fresh process (`bench_gaugan`;
  the reference through `--reference-cmd`), one after another, in half as many rounds (at least 2): each takes
  longer.

  python nbs/results/learner_speed.py [--rounds 6] [--reference-cmd CMD]

CMD is a shell command that times the reference on the same setup and prints a JSON line with `train_images_per_s`
(the reference is only run, never copied: its license is not ours). Results go to nbs/results/learner_speed.json,
which `09e_fast` shows.
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent/'learner_speed.json'
SETUP = dict(size=64, bs=8, ngf=16, use_vae=False, vgg=True, device='cpu')
LEVERS = { # name: `gaugan_learner` arguments
    'plain fp32': dict(precision='fp32', channels_last=False, fused_adam=False),
    'fast fp32': dict(precision='fp32'),
    'plain bf16': dict(precision='bf16', channels_last=False, fused_adam=False),
    'bf16, channels-last': dict(precision='bf16', fused_adam=False),
    'bf16, fused Adam': dict(precision='bf16', channels_last=False),
    'fast bf16': dict(precision='bf16'),
    'fast bf16, critic_first steps': dict(precision='bf16', steps='critic_first'),
    'fast bf16, paired_reuse steps': dict(precision='bf16', steps='paired_reuse'),
}
NEXT_TO_REFERENCE = ['plain fp32', 'fast bf16', 'fast bf16, critic_first steps', 'fast bf16, paired_reuse steps']

def images_per_s(learn, iters:int)->float:
    "Train `learn` one epoch, return its training images/s (`iters` iterations of `bs` images)."
    t0 = time.perf_counter()
    with learn.no_logging(), learn.no_bar(): learn.fit(1)
    return iters * SETUP['bs'] / (time.perf_counter() - t0)

def levers(rounds:int, iters:int=3)->dict:
    "Images/s of each configuration of `LEVERS`, `rounds` times, interleaved in this process."
    from gaugan_fastai.bench import synthetic_dls
    from gaugan_fastai.learner import gaugan_learner
    from gaugan_fastai.losses import VGGLoss
    learners = {}
    for name, kwargs in LEVERS.items():
        per_iter = 1 if kwargs.get('steps', 'alternate') != 'alternate' else 2  # batches of the data per iteration
        dls = synthetic_dls(8, SETUP['size'], SETUP['bs'], per_iter * iters, SETUP['device'])
        learners[name] = gaugan_learner(dls, ngf=SETUP['ngf'], use_vae=SETUP['use_vae'], vgg=VGGLoss(pretrained=False),
                                        checkpoint=None, **kwargs)
        images_per_s(learners[name], iters)  # warm-up
    runs = {name: [] for name in LEVERS}
    for r in range(rounds):
        for name, learn in learners.items(): runs[name].append(round(images_per_s(learn, iters), 3))
        print(f"levers, round {r + 1}: " + ', '.join(f"{n} {v[-1]:.2f}" for n, v in runs.items()), flush=True)
    return runs

def run_fresh(cmd:list|str, shell=False)->float:
    "Run `cmd` in a fresh process; the `train_images_per_s` of the last JSON line it prints."
    out = subprocess.run(cmd, shell=shell, capture_output=True, text=True, check=True).stdout
    return json.loads([l for l in out.splitlines() if l.startswith('{')][-1])['train_images_per_s']

def next_to_reference(rounds:int, reference_cmd:str, iters:int=8)->dict:
    "Images/s of the reference and of `NEXT_TO_REFERENCE`, each a fresh process, one after another, `rounds` times."
    runs = {'reference fp32': [], **{n: [] for n in NEXT_TO_REFERENCE}}
    for r in range(rounds):
        for name in runs:
            runs[name].append(run_fresh(reference_cmd, shell=True) if name == 'reference fp32' else
                              run_fresh([sys.executable, __file__, '--one', name, '--iters', str(iters)]))
            print(f"reference, round {r + 1}: {name} {runs[name][-1]:.2f}", flush=True)
    return runs

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=6); ap.add_argument('--reference-cmd')
    ap.add_argument('--one'); ap.add_argument('--iters', type=int, default=8)
    a = ap.parse_args()
    if a.one:
        from gaugan_fastai.bench import bench_gaugan
        return print(json.dumps({'train_images_per_s': bench_gaugan(**SETUP, **LEVERS[a.one], n_iters=a.iters, warmup=2)['train_images_per_s']}))
    import torch
    out = {'setup': SETUP, 'configs': LEVERS, 'date': time.strftime('%Y-%m-%d'),
           'machine': f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
           'levers': levers(a.rounds)}
    if a.reference_cmd: out['reference'] = next_to_reference(max(2, a.rounds // 2), a.reference_cmd)
    out['median'] = {part: {n: statistics.median(v) for n, v in out[part].items()} for part in ('levers', 'reference') if part in out}
    RESULTS.write_text(json.dumps(out, indent=1) + '\n')
    print(f"wrote {RESULTS}")

if __name__ == '__main__': main()
