"""Fault injection: a real `kill -9` of a training process mid-epoch and mid-save, then a resume.

Each run is a separate process (`checkpoint_child.py`): a tiny GauGAN (width 8) on 12 generated 32x32 land-cover
tiles, 4 epochs of 2 steps each, on one thread; the two runs to be killed start first and train alongside the
uninterrupted run they are compared with. The test checks what the issue promises: at most the current epoch is
lost, every earlier checkpoint is intact (it loads, its fingerprint is this run's, its bytes do not change on
resume), no truncated or zero-byte file lies under a checkpoint's name, and the resumed run follows the schedule
(learning rates and betas per step) of an uninterrupted run and ends with the same weights."""
import hashlib, json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from gaugan_fastai.checkpoints import load_checkpoint, unfinished_saves
from gaugan_fastai.formats import make_landcover_demo

CHILD = Path(__file__).with_name('checkpoint_child.py')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}

def train(work, folder, mode, marker=None):
    "Start a training process; return it with the path of its step record."
    record = work/f'{folder}-{mode}.jsonl'
    args = [sys.executable, str(CHILD), str(work/'data'), str(work/folder), str(record), mode] + ([str(marker)] if marker else [])
    return subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), record

def finish(proc):
    "Wait for a training process that must succeed; return its output."
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out

def kill_at(proc, marker):
    "`kill -9` the process as soon as it has made `marker` (it then waits at a known point)."
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, f"the run ended before reaching the kill point:\n{proc.communicate()[0]}"
        assert time.time() < deadline, "the run did not reach the kill point in 300 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

def steps(record)->list: return [json.loads(l) for l in Path(record).read_text().splitlines()]
def digest(fn)->str: return hashlib.sha256(Path(fn).read_bytes()).hexdigest()
def names(folder)->list: return sorted(f.name for f in Path(folder).iterdir() if f.name != '.gaugan_fastai.lock')

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "A folder with the data set (`data`), where the runs write."
    d = tmp_path_factory.mktemp('kill')
    make_landcover_demo(d/'data', n=12, size=32)
    return d

@pytest.fixture(scope='module')
def hung(data):
    "The two runs the tests kill, started first so that they train alongside the uninterrupted run; each then waits at its kill point. {mode: (process, step record)}"
    runs = {mode: train(data, folder, mode, data/f'{mode}.marker') for folder, mode in (('epoch', 'hang-epoch'), ('save', 'hang-save'))}
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None: proc.kill(); proc.communicate()

@pytest.fixture(scope='module')
def work(data, hung):
    "The data's folder, with an uninterrupted run of 4 epochs (its checkpoints, step record and final weights) to compare with."
    proc, record = train(data, 'whole', 'fresh')
    finish(proc)
    assert names(data/'whole') == ['gaugan_0.pth', 'gaugan_1.pth', 'gaugan_2.pth', 'gaugan_3.pth']
    return data

def check_intact(folder, epochs, whole):
    "Checkpoints of `epochs` load, carry the uninterrupted run's fingerprint and weights; nothing else is named like one."
    assert [f.name for f in sorted(Path(folder).glob('gaugan_*.pth'))] == [f'gaugan_{e}.pth' for e in epochs]
    for e in epochs:
        got, ref = load_checkpoint(folder/f'gaugan_{e}.pth'), load_checkpoint(whole/f'gaugan_{e}.pth')
        assert got['epoch'] == e and got['fingerprint'] == ref['fingerprint']
        assert all(torch.equal(a, b) for a, b in zip(got['model'].values(), ref['model'].values()))

def check_resumed(work, killed_record, record, lost_epoch):
    "The killed run's steps before `lost_epoch` plus the resumed run's steps are the uninterrupted run's, and so are the final weights."
    whole = steps(work/'whole-fresh.jsonl')
    before = [s for s in steps(killed_record) if s[0] < lost_epoch]
    assert before + steps(record) == whole
    final, ref = torch.load(str(record) + '.pth'), torch.load(work/'whole-fresh.jsonl.pth')
    assert all(torch.equal(a, b) for a, b in zip(final.values(), ref.values()))

def test_kill_mid_epoch(work, hung):
    "Killed after the first step of epoch 2: epochs 0 and 1 are kept; the resume retrains epoch 2 and goes on."
    (proc, killed), marker = hung['hang-epoch'], work/'hang-epoch.marker'
    kill_at(proc, marker)
    assert [s[0] for s in steps(killed)][-1] == 2  # it was inside epoch 2
    check_intact(work/'epoch', [0, 1], work/'whole')
    kept = {f: digest(work/'epoch'/f) for f in ('gaugan_0.pth', 'gaugan_1.pth')}
    proc, record = train(work, 'epoch', 'resume')
    out = finish(proc)
    assert 'Took over the lock' in out and 'start epoch 2' in out, out
    assert {f: digest(work/'epoch'/f) for f in kept} == kept  # resuming did not rewrite the earlier epochs
    check_intact(work/'epoch', [0, 1, 2, 3], work/'whole')
    check_resumed(work, killed, record, lost_epoch=2)

def test_kill_mid_save(work, hung):
    "Killed while saving epoch 1, after its temporary file is written: no gaugan_1.pth, the resume retrains epoch 1."
    (proc, killed), marker = hung['hang-save'], work/'hang-save.marker'
    kill_at(proc, marker)
    left = unfinished_saves(work/'save', 'gaugan_*.pth')
    assert len(left) == 1 and left[0].name.startswith('.gaugan_1.pth.') and left[0].stat().st_size > 0
    assert names(work/'save') == sorted(['gaugan_0.pth', left[0].name])  # nothing under gaugan_1.pth's name
    check_intact(work/'save', [0], work/'whole')
    proc, record = train(work, 'save', 'resume')
    out = finish(proc)
    assert 'start epoch 1' in out and f'Removed {left[0].name}' in out, out
    assert names(work/'save') == ['gaugan_0.pth', 'gaugan_1.pth', 'gaugan_2.pth', 'gaugan_3.pth']
    check_intact(work/'save', [0, 1, 2, 3], work/'whole')
    check_resumed(work, killed, record, lost_epoch=1)
