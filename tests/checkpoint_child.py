"""A tiny GauGAN training run for `test_checkpoints.py`, run as a separate process so that the test can `kill -9` it.

    python checkpoint_child.py DATA FOLDER RECORD MODE [MARKER]

MODE: 'fresh' trains 4 epochs from scratch; 'resume' continues the run in FOLDER (`learn.resume()`);
'hang-epoch' trains from scratch but stops in the middle of epoch 2 (after its first step) and waits to be killed;
'hang-save' waits to be killed inside the save of epoch 1's checkpoint, after its temporary file is written and
before the rename. Both hangs create MARKER first, so that the test kills at a known point.
Every optimizer step appends `[epoch, iter, [[lr, betas] per parameter group]]` to RECORD (flushed at once: a killed run
keeps its record); at the end, the model's weights go to RECORD + '.pth'.
"""
import json, os, sys, time
from pathlib import Path
import torch
from fastai.callback.core import Callback
from gaugan_fastai.core import seeded, skip_collection_at_exit
from gaugan_fastai.formats import data_loaders
from gaugan_fastai.learner import gaugan_learner
skip_collection_at_exit()  # the process ends seconds sooner (core)

EPOCHS, LR = 4, 2e-3
data, folder, record, mode = sys.argv[1:5]
marker = Path(sys.argv[5]) if len(sys.argv) > 5 else None

def hang():
    "Tell the test where we are, then wait for its kill -9."
    marker.touch()
    time.sleep(600)
    sys.exit("not killed")

class Record(Callback):
    "Append every step's epoch, iteration, learning rates and betas to `record`; hang mid-epoch in 'hang-epoch' mode."
    order = 100
    def before_fit(self): self.f = open(record, 'a')
    def before_step(self):
        hypers = [[g['lr'], list(g['betas'])] for g in self.learn.opt.opt.param_groups]
        self.f.write(json.dumps([self.epoch, self.iter, hypers]) + '\n'); self.f.flush()
    def after_batch(self):
        if mode == 'hang-epoch' and self.epoch == 2 and self.iter == 0: hang()
    def after_fit(self): self.f.close()

if mode == 'hang-save':  # in this process only: the rename that ends `atomic_save` of epoch 1 never comes
    real_replace = os.replace
    def replace(src, dst, **kwargs):
        if Path(dst).name == 'gaugan_1.pth': hang()
        return real_replace(src, dst, **kwargs)
    os.replace = replace

dls = data_loaders(data, size=32, bs=4, seed=0, num_workers=0, device='cpu')
with seeded(0):
    learn = gaugan_learner(dls, ngf=8, ndf=8, z_dim=8, n_layers_D=2, vgg=False, path=folder, model_dir='.')
if mode == 'resume':
    start = learn.resume()
    print(f"start epoch {start}")
    learn.fit_one_cycle(EPOCHS, LR, start_epoch=start, cbs=Record())
else:
    with seeded(1): learn.fit_one_cycle(EPOCHS, LR, cbs=Record())
torch.save(learn.model.state_dict(), record + '.pth')
