"""Train a tiny GauGAN on 16 in-memory samples, alone or as one process of `torchrun --nproc-per-node N`, and write
what this process saw and did into `--out`, for tests/test_distributed.py and the measurements in
nbs/08c_distributed.ipynb:

- `ids_epoch{E}_rank{R}.json`: the samples of each training batch of epoch E (indices into the 16);
- `saves_rank{R}.json`: every checkpoint this process wrote (`atomic_save`) during training;
- `weights_rank{R}.pt`: its generator and critic (parameters and buffers) after training;
- `outputs_rank{R}.pt`: what they compute then, in eval mode, for the first 4 samples: images and critic scores;
- `record_rank{R}.json`: the Recorder's epoch values (loss and terms) and its smoothed per-batch losses;
- with `--time`: `speed.json` (rank 0), training images per second over all processes;
- with `--check-batchnorm`: `batchnorm_rank{R}.json`, the largest differences between `CPUSyncBatchNorm` on this
  process's share of a batch and `nn.BatchNorm2d` on the whole batch (outputs, gradients, running statistics).

`--replay DIR` trains one process on the batches the processes of an earlier run saw (read from its ids files), each
step's batches joined into one: the same data at N times the batch size. The style noise is switched off
(z = mu, see the notebook) so that runs on different process counts can be compared value for value."""
import argparse, copy, json, re, time
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F, torch.distributed as dist
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.callback.core import Callback, CancelFitException
from fastai.torch_core import TensorImage, rank_distrib
import gaugan_fastai.learner as learner_module, gaugan_fastai.distributed as distributed_module, gaugan_fastai.checkpoints as checkpoints_module
from gaugan_fastai.core import *
from gaugan_fastai.data import LabelMap, default_palette
from gaugan_fastai.learner import gaugan_learner
from gaugan_fastai.distributed import num_processes
skip_collection_at_exit()  # each launch's processes end seconds sooner (core)

N_SAMPLES, N_CLASSES = 16, 4

def samples(size, dtype):
    "`N_SAMPLES` distinct (label map, photo) pairs: random 8x8-pixel blocks of classes, the photo their colours plus noise."
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, N_CLASSES, (N_SAMPLES, size // 8, size // 8), generator=g)
    labels = labels.repeat_interleave(8, 1).repeat_interleave(8, 2)
    palette = default_palette(N_CLASSES)
    images = torch.as_tensor(palette).float()[labels].movedim(-1, 1) / 127.5 - 1
    images = (images + 0.1 * torch.randn(images.shape, generator=g)).clamp(-1, 1)
    return [(LabelMap(l), TensorImage(i).to(dtype)) for l, i in zip(labels, images)], palette # (fastai makes float64 float32)

class InMemory(list):
    "The samples as a data set that has `items`, as fastai's `Datasets` do (the checkpoints' data fingerprint reads them)."
    @property
    def items(self): return self

def data_loaders(items, palette, bs, get_idxs=None):
    "Shuffled training batches (or, with `get_idxs`, batches in that order) on the CPU."
    items = InMemory(items)
    train = (DataLoader(items, bs=bs, drop_last=True, device='cpu', get_idxs=get_idxs) if get_idxs else
             DataLoader(items, bs=bs, shuffle=True, drop_last=True, device='cpu'))
    dls = DataLoaders(train, DataLoader(InMemory(items[:bs]), bs=bs, device='cpu'), device='cpu')
    dls.codes, dls.palette, dls.c, dls.semantic_nc = [f'class {i}' for i in range(N_CLASSES)], palette, N_CLASSES, N_CLASSES
    return dls

class RecordBatches(Callback):
    "Record the samples of every training batch (found by their label maps) and every checkpoint written."
    order = -100 # before anything changes the batch
    def __init__(self, items):
        self.index = {l.numpy().tobytes(): i for i, (l, _) in enumerate(items)}
        assert len(self.index) == len(items), "the samples must be distinct"
        self.ids, self.saves = {}, []
    def before_fit(self):
        self.atomic_save = checkpoints_module.atomic_save
        def recording_save(obj, path, *args, **kwargs):
            self.saves.append(Path(path).name)
            return self.atomic_save(obj, path, *args, **kwargs)
        checkpoints_module.atomic_save = recording_save
    def before_batch(self):
        if self.training: self.ids.setdefault(self.epoch, []).append([self.index[l.numpy().tobytes()] for l in self.xb[0]])
    def after_fit(self): checkpoints_module.atomic_save = self.atomic_save

class Replay(Callback):
    "The batches the processes of an earlier run saw (its ids files in `folder`), each step's joined into one batch."
    def __init__(self, folder:Path):
        ids = {tuple(map(int, re.fullmatch(r'ids_epoch(\d+)_rank(\d+)', f.stem).groups())): json.loads(f.read_text())
               for f in folder.glob('ids_epoch*_rank*.json')}
        self.ranks, self.current = sorted({r for _, r in ids}), 0
        self.orders = {e: [i for step in zip(*(ids[e, r] for r in self.ranks)) for batch in step for i in batch] for e, _ in ids}
    def get_idxs(self): return self.orders[self.current]
    def before_epoch(self): self.current = self.epoch

class Float32Loss(Callback):
    "The recorded loss in float32 (fastai's smoothing of it cannot mix dtypes) when training in float64."
    order = 11.6 # where `DistributedGauGAN` averages it into float32
    def after_loss(self): self.learn.loss = self.learn.loss.float()

class StopAfter(Callback):
    "Stop training after `n` epochs (and their checkpoints), as a run killed at that point would."
    order = 100 # after `SaveModelCallback`
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch + 1 == self.n: raise CancelFitException

@torch.no_grad()
def outputs(model, items):
    "Generated images and critic scores (last layer of each scale) of `model` in eval mode for `items`."
    labels, real = (torch.stack([plain(t) for t in ts]) for ts in zip(*items))
    model.eval()
    seg = model.semantic(labels)
    fake = model.generator(seg, real)['fake']
    return {'fake': fake, 'scores': [scale[-1] for scale in model.critic(torch.cat([seg, real], 1))]}

def per_process_batchnorm(model, device):
    "Instead of `sync_batchnorm`: every process normalises with its own batch statistics (for comparison)."
    for m in model.modules():
        if isinstance(m, nn.SyncBatchNorm): m.__class__ = nn.BatchNorm2d
    return model

def check_batchnorm(steps=2):
    "Largest differences between synchronised batch norm on this process's share and batch norm on the whole batch."
    world, rank = dist.get_world_size(), dist.get_rank()
    g = torch.Generator().manual_seed(0)
    whole = nn.BatchNorm2d(3)
    with torch.no_grad(): whole.weight.normal_(generator=g); whole.bias.normal_(generator=g)
    share = distributed_module.sync_batchnorm(copy.deepcopy(whole), 'cpu')
    part, diffs = slice(rank * 4, (rank + 1) * 4), {}
    for step in range(steps):
        x = torch.randn(4 * world, 3, 5, 6, generator=g) * 3 + 1 # mean far from 0: a one-pass variance would lose digits
        w = torch.randn(x.shape, generator=g) # the loss is sum(w * y)
        for bn in (whole, share): bn.zero_grad()
        xw, xs = x.clone().requires_grad_(), x[part].clone().requires_grad_()
        yw, ys = whole(xw), share(xs)
        (w * yw).sum().backward(); (w[part] * ys).sum().backward()
        grads = {n: p.grad.clone() for n, p in share.named_parameters()}
        for t in grads.values(): dist.all_reduce(t) # each process holds its share's part of the gradient
        diffs[step] = {'output': (ys - yw[part]).abs().max().item(), 'input_grad': (xs.grad - xw.grad[part]).abs().max().item(),
                       **{f'{n}_grad': (grads[n] - p.grad).abs().max().item() for n, p in whole.named_parameters()},
                       **{n: (getattr(share, n) - getattr(whole, n)).abs().max().item() for n in ('running_mean', 'running_var')},
                       'per_process_output': (F.batch_norm(x[part], None, None, whole.weight, whole.bias, True) - yw[part]).abs().max().item()}
    return diffs

class Timer(Callback):
    "Seconds from the start of batch `warmup` to the end of training, and the batches in between."
    order = 100
    def __init__(self, warmup): self.warmup, self.steps, self.start = warmup, 0, None
    def before_batch(self):
        if self.iter == self.warmup and self.epoch == 0: self.start = time.perf_counter()
        if self.start is not None: self.steps += 1
    def after_fit(self): self.seconds = time.perf_counter() - self.start

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, required=True)
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--resume', action='store_true', help='continue from the newest checkpoint in OUT/checkpoints')
    p.add_argument('--stop-after', type=int, metavar='E', help='stop after E epochs, as if killed')
    p.add_argument('--per-process-bn', action='store_true', help='batch norm without synchronisation (for comparison)')
    p.add_argument('--replay', type=Path, help='folder of an earlier run whose batches to train on, joined')
    p.add_argument('--bs', type=int, default=2, help='batch size per process')
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--ngf', type=int, default=4)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--lambda-kl', type=float, default=0.05)
    p.add_argument('--float64', action='store_true', help='train in float64 (runs then compare to rounding)')
    p.add_argument('--check-batchnorm', action='store_true', help='compare synchronised batch norm with one process')
    p.add_argument('--time', type=int, metavar='WARMUP', help='time training after WARMUP batches')
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    learner_module.reparameterize = lambda mu, logvar: mu # no style noise: runs compare value for value
    if a.per_process_bn: distributed_module.sync_batchnorm = per_process_batchnorm
    rank = rank_distrib()
    items, palette = samples(a.size, torch.float64 if a.float64 else torch.float32)
    if a.float64: # the one-hot label maps too
        semantic = learner_module.GauGAN.semantic
        learner_module.GauGAN.semantic = lambda self, *labels: semantic(self, *labels).double()
    replay = Replay(a.replay) if a.replay else None
    if replay: a.bs *= len(replay.ranks)
    with seeded(0):
        dls = data_loaders(items, palette, a.bs, (lambda: replay.get_idxs()) if replay else None) # (fastai rebinds methods)
        learn = gaugan_learner(dls, ngf=a.ngf, ndf=8, z_dim=8, vgg=False, n_layers_D=2, lambda_kl=a.lambda_kl,
                               lr=a.lr, checkpoint='gaugan', path=a.out, model_dir='checkpoints')
        if a.float64: learn.model.double()
        start = learn.resume() if a.resume else 0
        record, timer = RecordBatches(items), Timer(a.time or 0)
        cbs = [record] + [cb for cb, use in ((replay, replay), (timer, a.time is not None), (StopAfter(a.stop_after), a.stop_after),
                                             (Float32Loss(), a.float64)) if use]
        with learn.distrib_ctx(), learn.no_logging():
            if a.check_batchnorm: (a.out/f'batchnorm_rank{rank}.json').write_text(json.dumps(check_batchnorm()))
            learn.fit_one_cycle(a.epochs, a.lr, start_epoch=start, cbs=cbs)
    for e, batches in record.ids.items(): (a.out/f'ids_epoch{e}_rank{rank}.json').write_text(json.dumps(batches))
    (a.out/f'saves_rank{rank}.json').write_text(json.dumps(record.saves))
    torch.save({k: v.detach().clone() for k, v in learn.model.state_dict().items()}, a.out/f'weights_rank{rank}.pt')
    torch.save(outputs(learn.model, items[:4]), a.out/f'outputs_rank{rank}.pt')
    values = [[float(v) for v in epoch_values] for epoch_values in learn.recorder.values]
    (a.out/f'record_rank{rank}.json').write_text(json.dumps({'names': list(learn.recorder.metric_names[1:-1]), 'values': values,
                                                            'losses': [float(l) for l in learn.recorder.losses]}))
    if a.time is not None and rank == 0:
        n = num_processes()
        speed = {'processes': n, 'bs_per_process': a.bs, 'steps': timer.steps, 'seconds': timer.seconds,
                 'images_per_s': timer.steps * a.bs * n / timer.seconds, 'threads_per_process': torch.get_num_threads()}
        (a.out/'speed.json').write_text(json.dumps(speed))
    if rank == 0: print(f"trained epochs {start}..{a.epochs - 1} on {num_processes()} process(es), batch {a.bs} each")

if __name__ == '__main__': main()
