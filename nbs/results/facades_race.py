"""The Facades race: training settings of gaugan_fastai, and the NVlabs/SPADE reference, each trained for the same
time budget on CMP Facades, and scored by one yardstick on the fixed held-out split.

Setup (issue "Quality"): 64x64 crops of 72x72 resizes, batch 8, generator and critic width 16, no style encoder, no
VGG loss, one torch thread. A budget is minutes of one CPU core's time (the process's CPU time, which other processes
on a shared machine barely change, unlike wall-clock time), turned into whole epochs per setting by a calibration (CPU
seconds per epoch of each setting), so that every run trains exactly as much as its budget allows whatever the load:
the results do not depend on other processes.

  python nbs/results/facades_race.py calibrate [KEY]            # CPU seconds per epoch of each speed class (or of KEY)
  python nbs/results/facades_race.py calibrate reference --reference PATH  # ... of the reference (a NVlabs/SPADE checkout)
  python nbs/results/facades_race.py train NAME [--seed S]      # one setting of SETTINGS, for its budget
  python nbs/results/facades_race.py reference --reference PATH # the reference for the budget, then its held-out images
  python nbs/results/facades_race.py segmenter                  # train the yardstick's segmenter (score does when needed)
  python nbs/results/facades_race.py score                      # every run by the yardstick -> nbs/results/facades_race.json, nbs/images/facades_race.png

The same settings can also be compared at the same number of epochs rather than the same time (`train --epochs N`), and
scored into another results file (`score --results NAME`: nbs/results/NAME.json, nbs/images/NAME.png), e.g. float32
against bfloat16 (what bfloat16's rounding costs, apart from its speed), in a --work folder of their own:

  python nbs/results/facades_race.py train init_pytorch_ttur_off --epochs 6 --seed S --work W  # S: 0, then 1
  python nbs/results/facades_race.py train init_pytorch_ttur_off_fp32 --epochs 6 --seed S --work W
  python nbs/results/facades_race.py score --work W --results precision_race   # as 09e_fast shows them

Runs, the calibration, the segmenter and the reference's files live in --work (default ~/.cache/gaugan_fastai/race);
nothing of the data set is written into the repository. The reference is only run, never copied: its license
(CC BY-NC-SA) is not ours.
"""
from __future__ import annotations
import argparse, copy, json, os, textwrap, platform, resource, subprocess, sys, time
from pathlib import Path
import numpy as np, torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MINUTES = 5 # the budget of every run: minutes of one core's CPU time, one torch thread (`--minutes`)
SIZE, BS, NGF, NDF, EMA = 64, 8, 16, 16, 0.999
BASE = dict(precision='bf16', schedule='fit_flat_cos', lr=2e-3, steps='alternate', ttur=(0.5, 2.), init_type='xavier')
SETTINGS = { # name -> what differs from BASE (the Facades tutorial's CPU recipe when the study began)
    'tutorial': {},
    'init_pytorch': dict(init_type=None), # PyTorch's default initialization instead of the reference's
    'lr_reference': dict(schedule='fit', lr=2e-4), # the reference's constant 2e-4
    'paired': dict(steps='paired'), # the reference's scheme: both networks on every batch
    'paired_reuse': dict(steps='paired_reuse'), # ... the critic judging the generator step's images
    'ttur_off': dict(ttur=(1., 1.)), # one learning rate for both networks instead of the reference's TTUR (lr/2, 2 lr)
    'init_pytorch_ttur_off': dict(init_type=None, ttur=(1., 1.)), # both of the above
    'init_pytorch_ttur_off_fp32': dict(init_type=None, ttur=(1., 1.), precision='fp32'), # ... in float32, not bfloat16
}

def setting(name:str)->dict:
    if name not in SETTINGS: raise SystemExit(f"unknown setting {name!r}: one of {', '.join(SETTINGS)}")
    return {**BASE, **SETTINGS[name]}

def speed_key(s:dict)->str: return f"{s['precision']}-{s['steps']}" # what sets the time an epoch takes

def machine()->dict:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.processor())
    return dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__)

def facades_dls(seed:int, **kwargs):
    from gaugan_fastai.all import data_loaders, shared_data, held_out_file
    path = shared_data('facades-cmp-base')
    if path is None: raise SystemExit("CMP Facades is not on disk (see gaugan_fastai.core.shared_data)")
    return data_loaders(path, 'cmp_facades', **{**dict(size=SIZE, bs=BS, seed=seed, valid_names=held_out_file(),
                                                     num_workers=0, device='cpu'), **kwargs})

def learner(s:dict, dls):
    from gaugan_fastai.all import gaugan_learner
    return gaugan_learner(dls, ngf=NGF, ndf=NDF, use_vae=False, vgg=False, checkpoint=None, lr=s['lr'], ttur=s['ttur'],
                          steps=s['steps'], precision=s['precision'], init_type=s['init_type'], ema=EMA)

# --- calibration -------------------------------------------------------------------------------------------------
def epoch_seconds(s:dict, epochs:int=2)->float:
    "Median CPU seconds of the epochs after the first (which warms up) of setting `s`."
    from fastai.callback.core import Callback
    class EpochTimes(Callback):
        def before_epoch(self): self.t = time.process_time()
        def after_epoch(self): self.times.append(time.process_time() - self.t)
    timer = EpochTimes(); timer.times = []
    learn = learner(s, facades_dls(0))
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, s['lr'], cbs=timer)
    return float(np.median(timer.times[1:]))

def reference_cmd(spade:Path, python:str, name:str, data:Path, work:Path, epochs:int, phase:str='train')->list:
    common = ['--name', name, '--dataset_mode', 'facades', '--dataroot', str(data), '--gpu_ids', '-1', '--ngf', str(NGF),
              '--checkpoints_dir', str(work/'reference')]
    if phase == 'train':
        return [python, str(spade/'train.py'), *common, '--batchSize', str(BS), '--ndf', str(NDF),
                '--load_size', str(round(SIZE * 286 / 256)), '--crop_size', str(SIZE), '--no_vgg_loss',
                '--niter', str(epochs), '--print_freq', '240', '--display_freq', '1000000', '--save_epoch_freq', '1000',
                '--no_html']
    return [python, str(spade/'test.py'), *common, '--load_size', str(SIZE), '--crop_size', str(SIZE),
            '--results_dir', str(work/'reference'/'results'), '--how_many', '1000']

def reference_layout(work:Path)->Path:
    "The held-out split in the reference's facades layout (symlinks): train_* the training names, val_* the held-out ones."
    from gaugan_fastai.all import shared_data, held_out_file
    src, dest = shared_data('facades-cmp-base')/'base', work/'reference'/'data'
    held = set(held_out_file().read_text().split())
    for phase in ('train', 'val'):
        for kind in ('label', 'img'): (dest/f'{phase}_{kind}').mkdir(parents=True, exist_ok=True)
    for label in sorted(src.glob('cmp_*.png')):
        phase = 'val' if label.stem in held else 'train'
        for f, kind in ((label, 'label'), (label.with_suffix('.jpg'), 'img')):
            link = dest/f'{phase}_{kind}'/f.name
            if not link.exists(): link.symlink_to(f)
    return dest

def run_reference(spade:Path, python:str, work:Path, epochs:int, name:str)->float:
    "Train the reference for `epochs`, with its own code and defaults otherwise; return its CPU seconds."
    env = {**os.environ, 'SPADE_VGG_RANDOM': '1', 'OMP_NUM_THREADS': str(torch.get_num_threads())}
    start = children_cpu()
    subprocess.run(reference_cmd(spade, python, name, reference_layout(work), work, epochs), cwd=spade, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return children_cpu() - start

def children_cpu()->float:
    "CPU seconds (user and system) of the finished child processes."
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime

def speed_keys()->list: return sorted({speed_key(setting(n)) for n in SETTINGS}) + ['reference']

def calibrate(args):
    "CPU seconds per epoch of one speed class of the settings (`args.name`: `speed_keys()`), or of each in turn."
    for key in [args.name] if args.name else speed_keys():
        if key not in speed_keys(): raise SystemExit(f"unknown speed class {key!r}: one of {', '.join(speed_keys())}")
        if key == 'reference':
            if args.reference is None: raise SystemExit("calibrating the reference needs --reference")
            t1, t2 = (run_reference(args.reference, args.python, args.work, n, f'calibrate{n}') for n in (1, 2))
            seconds = t2 - t1 # an epoch's time without the start-up
        else: seconds = epoch_seconds(next(setting(n) for n in SETTINGS if speed_key(setting(n)) == key))
        file = args.work/'calibration'/f'{key}.json'
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(dict(cpu_seconds_per_epoch=seconds, machine=machine()), indent=1))
        print(f"{key}: {seconds:.1f} CPU s per epoch", flush=True)

def calibration(work:Path)->dict:
    "Speed class -> CPU seconds per epoch."
    return {f.stem: json.loads(f.read_text())['cpu_seconds_per_epoch'] for f in sorted((work/'calibration').glob('*.json'))}

def budget_epochs(work:Path, key:str, minutes:float)->int:
    cal = calibration(work)
    if key not in cal: raise SystemExit(f"no calibration for {key}: run `calibrate {key}` first")
    return max(1, round(minutes * 60 / cal[key]))

# --- runs --------------------------------------------------------------------------------------------------------
def train(args):
    from gaugan_fastai.all import set_seed
    s = setting(args.name)
    run = args.work/'runs'/f'{args.name}_seed{args.seed}'
    epochs = args.epochs or budget_epochs(args.work, speed_key(s), args.minutes)
    set_seed(args.seed)
    learn = learner(s, facades_dls(args.seed))
    start = time.process_time()
    with learn.no_bar(): getattr(learn, s['schedule'])(epochs, s['lr'])
    seconds = time.process_time() - start
    learn.export_synthesizer(run/'ema.pth')
    raw = copy.copy(learn.synthesizer()) # the trained weights themselves, next to their average
    raw.generator, raw.ema = learn.model.generator, None
    raw.save(run/'raw.pth')
    (run/'run.json').write_text(json.dumps(dict(name=args.name, seed=args.seed, setting=s,
        minutes=None if args.epochs else args.minutes, epochs=epochs,
        steps=int(learn.train_iter), train_cpu_seconds=seconds, machine=machine()), indent=1))
    print(f"{args.name} seed {args.seed}: {epochs} epochs, {learn.train_iter} steps in {seconds / 60:.1f} CPU min")

def reference(args):
    epochs = budget_epochs(args.work, 'reference', args.minutes)
    seconds = run_reference(args.reference, args.python, args.work, epochs, 'race')
    subprocess.run(reference_cmd(args.reference, args.python, 'race', reference_layout(args.work), args.work, epochs, 'test'),
                   cwd=args.reference, env={**os.environ, 'SPADE_VGG_RANDOM': '1'}, check=True, stdout=subprocess.DEVNULL)
    run = args.work/'runs'/'reference'
    run.mkdir(parents=True, exist_ok=True)
    batches = len(list((reference_layout(args.work)/'train_label').iterdir())) // BS # it drops the last partial batch
    (run/'run.json').write_text(json.dumps(dict(name='reference', seed=None, minutes=args.minutes, epochs=epochs, steps=2 * epochs * batches,
        train_cpu_seconds=seconds, machine=machine(), setting=dict(precision='fp32', schedule='constant', lr=2e-4, steps='paired',
        ttur=(0.5, 2.), init_type='xavier')), indent=1))
    print(f"reference: {epochs} epochs in {seconds / 60:.1f} CPU min")

# --- the yardstick -----------------------------------------------------------------------------------------------
def yardstick_dls():
    "The held-out photos and label maps at 64x64, whole (resized, not cropped), in a fixed order."
    return facades_dls(0, load_size=SIZE)

def segmenter_file(work:Path)->Path:
    from gaugan_fastai.all import get_segmenter
    file = work/'segmenter_64.pth'
    if not file.is_file(): get_segmenter(facades_dls(0), file) # trained once, on the training photos only
    return file

def folder_generator(folder:Path, dl):
    "A `score_generator` generator returning the images in `folder` named after the label maps of `dl`, batch by batch."
    names, batches = [Path(s.label).stem for s in dl.dataset.items], iter(range(0, len(dl.dataset), dl.bs))
    read = lambda n: torch.as_tensor(np.array(Image.open(folder/f'{n}.png').convert('RGB'))).permute(2, 0, 1).float() / 127.5 - 1
    def generate(labels, seed=None):
        start = next(batches)
        return torch.stack([read(n) for n in names[start:start + len(labels)]])
    return generate

def score(args):
    from gaugan_fastai.all import load_synthesizer, load_segmenter, score_generator, generator_fn
    seg, dls, rows, columns = load_segmenter(segmenter_file(args.work), 'cpu'), yardstick_dls(), [], {}
    labels, real = dls.valid.one_batch()
    order = [*SETTINGS, 'reference'] # the table's rows: the tutorial's recipe first, the reference last
    for run in sorted((args.work/'runs').iterdir(), key=lambda r: (order.index(r.name.split('_seed')[0]), r.name)):
        if not (run/'run.json').is_file(): print(f"{run.name}: not finished, left out"); continue
        info = json.loads((run/'run.json').read_text())
        if info['name'] == 'reference':
            images = args.work/'reference'/'results'/'race'/'test_latest'/'images'/'synthesized_image'
            variants = {'reference': lambda: folder_generator(images, dls.valid)}
        else: variants = {w: (lambda f=run/f'{w}.pth': generator_fn(load_synthesizer(f, 'cpu'))) for w in ('raw', 'ema')}
        scores = run/'scores.json' # a run's scores, kept while its model and the segmenter stay the same
        if scores.is_file() and scores.stat().st_mtime > max(f.stat().st_mtime for f in (run/'run.json', segmenter_file(args.work))):
            run_rows = json.loads(scores.read_text())
        else:
            run_rows = []
            for weights, make in variants.items():
                res = score_generator(make(), dls.valid, seg, n_diversity=0) # no style encoder: one image per label map
                run_rows.append(dict(**{k: info[k] for k in ('name', 'seed', 'setting', 'minutes', 'epochs', 'steps', 'train_cpu_seconds')},
                                     weights=weights, **{k: res[k] for k in ('miou', 'real_miou',
                                     'segmenter_frechet_distance', 'color_spread', 'real_color_spread', 'n_images')}))
            scores.write_text(json.dumps(run_rows, indent=1))
        if info['seed'] in (0, None): # the pictures: seed 0 of each setting
            columns[textwrap.fill(info['name'].replace('_', ' '), 13)] = variants['ema' if 'ema' in variants else 'reference']()(labels, seed=0)
        rows += run_rows
        for r in run_rows: print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != 'setting'}, flush=True)
    cal, results, pictures = calibration(args.work), REPO/'nbs'/'results'/f'{args.results}.json', REPO/'nbs'/'images'/f'{args.results}.png'
    results.write_text(json.dumps(dict(setup=dict(size=SIZE, bs=BS, ngf=NGF, ndf=NDF, use_vae=False, vgg=False,
        ema=EMA, base=BASE), machine=machine(), calibration=cal, rows=rows), indent=1))
    print(f"written {results}")
    from gaugan_fastai.all import show_samples
    fig = show_samples(labels, {**columns, 'real': real}, dls.palette, max_n=4, figsize=(1.2 * (len(columns) + 2), 1.3 * 4))
    fig.savefig(pictures, dpi=72, bbox_inches='tight')
    print(f"written {pictures}: the first held-out label maps, the images of each setting's seed-0 run (its weight average where it has one), the photos")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('command', choices=['calibrate', 'train', 'reference', 'segmenter', 'score'])
    ap.add_argument('name', nargs='?', help='a setting (train), a speed class (calibrate)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--work', type=Path, default=Path.home()/'.cache'/'gaugan_fastai'/'race')
    ap.add_argument('--reference', type=Path, help='a NVlabs/SPADE checkout (calibrate, reference)')
    ap.add_argument('--minutes', type=float, default=MINUTES, help="the budget of a run: minutes of one core's CPU time")
    ap.add_argument('--epochs', type=int, help='train: this many epochs, instead of what the budget allows')
    ap.add_argument('--results', default='facades_race', help='score: the name of the results file and of the picture')
    ap.add_argument('--python', default=sys.executable, help="the reference's Python (with its requirements: dominate, dill)")
    ap.add_argument('--threads', type=int, default=1, help='torch threads (of the reference too)')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {'calibrate': calibrate, 'train': train, 'reference': reference, 'score': score,
     'segmenter': lambda args: print(segmenter_file(args.work))}[args.command](args)
