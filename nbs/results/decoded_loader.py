"""Decode once (`SpadeDataLoaders(cache=True)`) against reading every file every epoch, on the real CMP Facades
(../shared/data/facades-cmp-base) at 256x256, batch 16: the image size and batch of the issue's GPU setup.

- **streamed**: the loaders as built by default, reading, decoding and resizing every file every epoch; with no
  worker process and with one (the default on 2 cores).
- **cached**: `cache=True`, which reads and resizes every file once, while the loaders are built (timed), and then
  only crops, flips and batches, in the main process.

Each loader runs 3 training epochs; its rate is the images of epochs 2 and 3 over their time (the first is the
start: worker processes start, files enter the page cache). Two rounds, the loaders in turn. The batches go to the
CPU: what a GPU trainer would receive before the copy to the device.

  python nbs/results/decoded_loader.py

Results go to nbs/results/decoded_loader.json, which `09e_fast` shows.
"""
from __future__ import annotations
import json, time
from pathlib import Path
from gaugan_fastai.core import shared_data
from gaugan_fastai.formats import data_loaders
from stacked_shared import machine  # beside this script

RESULTS = Path(__file__).resolve().parent/'decoded_loader.json'
LOADERS = {'streamed, 0 workers': dict(num_workers=0), 'streamed, 1 worker': dict(num_workers=1), 'cached': dict(cache=True)}

def rate(dl, epochs=3):
    "Images per second of epochs 2.. of `dl`."
    for epoch in range(epochs):
        if epoch == 1: n, t0 = 0, time.perf_counter()
        for batch in dl:
            if epoch >= 1: n += len(batch[-1])
    return n / (time.perf_counter() - t0)

def main(rounds=2):
    data = shared_data('facades-cmp-base')
    if data is None: raise SystemExit("the CMP Facades data set is not there: nothing measured")
    res = {name: {'images_per_s': [], 'build_s': []} for name in LOADERS}
    for r in range(rounds):
        for name, kwargs in LOADERS.items():
            t0 = time.perf_counter()
            dls = data_loaders(data, size=256, bs=16, seed=r, device='cpu', **kwargs)
            res[name]['build_s'].append(time.perf_counter() - t0)
            res[name]['images_per_s'].append(rate(dls.train))
            print(f"round {r + 1}, {name}: built in {res[name]['build_s'][-1]:.1f} s, {res[name]['images_per_s'][-1]:.0f} images/s")
    result = dict(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), machine=machine(),
                  data='CMP Facades (base)', n_train=len(dls.train_ds), size=256, bs=16, loaders=res)
    RESULTS.write_text(json.dumps(result, indent=1) + '\n')

if __name__ == '__main__':
    main()
