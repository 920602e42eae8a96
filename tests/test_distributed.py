"""Training on two processes of this CPU with the gloo backend, started as users start it: `torchrun` and
`accelerate launch` (see nbs/08c_distributed.ipynb).

Three launches of tests/distributed_worker.py train a tiny GauGAN (16 samples of 32x32, 4 steps per epoch, both
networks) in float64: two processes for one epoch of a two-epoch schedule, stopped as if killed; two processes
resuming from its checkpoint for the second epoch; one process on the same batches joined (2x the batch size) for
both epochs. In float64 the two runs must agree to rounding: in float32, Adam's first steps (beta1 = 0: each weight
moves by about +-lr whatever the size of its gradient) turn rounding differences in tiny gradient components into
lr-sized ones, and after 8 steps images differed by 5e-4 and single weights by 0.018 (nbs/08c_distributed.ipynb
measures it). Two more launches run `gaugan-train` itself: two epochs under `torchrun`, then epoch 1 again, resumed
under `accelerate launch` from epoch 0's checkpoint, which must end bit for bit where the uninterrupted run did (each
process restores its own random states); two more resume a two-process run on one process; more train from a function
through Accelerate's `notebook_launcher`, as a notebook would: with the default scheme, and with both networks
stepped on each batch (reusing the generator step's images, or sharing one generator pass) plus an EMA average."""
import json, os, socket, subprocess, sys
from pathlib import Path
import pytest
import torch

BIN, WORKER = Path(sys.executable).parent, Path(__file__).parent/'distributed_worker.py'
TWO = [str(BIN/'torchrun'), '--standalone', '--nproc-per-node', '2']

def launch(*args, cwd):
    "Run a command (one process per core: the gloo processes share the machine); check it succeeded; return it."
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p

def read(folder, name): return json.loads((folder/name).read_text())

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "Folders of the two-process run (killed after epoch 0, then resumed) and of the one-process run on its batches."
    d = tmp_path_factory.mktemp('distributed')
    two, one = d/'two', d/'one'
    first = launch(*TWO, WORKER, '--out', two, '--epochs', 2, '--stop-after', 1, '--float64', '--check-batchnorm', cwd=d)
    assert sorted(f.name for f in two.glob('ids_*')) == ['ids_epoch0_rank0.json', 'ids_epoch0_rank1.json']
    saves = [read(two, f'saves_rank{r}.json') for r in (0, 1)] # those of the first launch: the second overwrites them
    resumed = launch(*TWO, WORKER, '--out', two, '--epochs', 2, '--resume', '--float64', cwd=d)
    # the single process: the KL term is a sum over the batch, which DDP averages over the processes (as the
    # reference averaged it over GPUs), so at 2x the batch the same objective has half its weight
    launch(sys.executable, WORKER, '--out', one, '--epochs', 2, '--replay', two, '--lambda-kl', 0.025, '--float64', cwd=d)
    return dict(two=two, one=one, first=first.stdout, resumed=resumed.stdout, first_saves=saves)

def test_synchronised_batchnorm_matches_one_process_at_twice_the_batch(runs):
    "Outputs, gradients (input, weight, bias) and running statistics, two steps, in float32."
    for r in (0, 1):
        for step, diffs in read(runs['two'], f'batchnorm_rank{r}.json').items():
            # float32 rounding over the 240-element sums behind each gradient (values ~10): measured at most 3e-6
            assert max(v for k, v in diffs.items() if k != 'per_process_output') < 1e-5, (r, step, diffs)
            assert diffs['per_process_output'] > 0.1, diffs # what unsynchronised statistics would have given

def test_ranks_end_with_identical_networks(runs):
    w0, w1 = (torch.load(runs['two']/f'weights_rank{r}.pt') for r in (0, 1))
    assert any(k.startswith('generator.net') for k in w0) and any(k.startswith('generator.encoder') for k in w0)
    assert any(k.startswith('critic') for k in w0)
    different = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert not different, f"parameters or buffers differ between the ranks: {different[:5]}"

def test_each_rank_reads_its_own_half_of_every_epoch(runs):
    for epoch in (0, 1):
        b0, b1 = (read(runs['two'], f'ids_epoch{epoch}_rank{r}.json') for r in (0, 1))
        assert len(b0) == len(b1) == 4 and all(len(b) == 2 for b in b0 + b1) # 16 samples / (2 processes x batch 2)
        s0, s1 = ({i for b in batches for i in b} for batches in (b0, b1))
        assert len(s0) == len(s1) == 8 and not s0 & s1 and s0 | s1 == set(range(16)), (epoch, b0, b1)

def test_only_rank_zero_writes_checkpoints(runs):
    assert runs['first_saves'] == [['gaugan_0.pth'], []]
    assert read(runs['two'], 'saves_rank1.json') == [] and 'gaugan_1.pth' in read(runs['two'], 'saves_rank0.json')
    assert sorted(f.name for f in (runs['two']/'checkpoints').glob('*.pth')) == ['gaugan_0.pth', 'gaugan_1.pth']

def test_resume_continues_the_schedule(runs):
    assert 'trained epochs 0..1 on 2 process(es), batch 2 each' in runs['first'] # (stopped after epoch 0)
    assert 'trained epochs 1..1 on 2 process(es), batch 2 each' in runs['resumed']
    assert sorted(f.name for f in runs['two'].glob('ids_epoch1_*')) == ['ids_epoch1_rank0.json', 'ids_epoch1_rank1.json']

def test_recorded_losses_are_averaged_over_ranks(runs):
    r0, r1, one = (read(runs[k], f'record_rank{r}.json') for k, r in (('two', 0), ('two', 1), ('one', 0)))
    assert r0 == r1
    assert r0['names'][1:] == ['g_loss', 'g_gan', 'g_fm', 'g_kl', 'd_loss', 'score_real', 'score_fake']
    # epoch 1, the one the resumed run recorded (its smoothed train_loss restarted with it: not compared)
    for name, v2, v1 in list(zip(r0['names'], r0['values'][1], one['values'][1]))[1:]:
        assert abs(v2 - v1) <= 1e-5 * max(abs(v1), 1e-3), (name, v2, v1) # recorded in float32

def test_matches_one_process_at_twice_the_batch(runs):
    o2, o1 = (torch.load(runs[k]/'outputs_rank0.pt') for k in ('two', 'one'))
    assert o1['fake'].abs().max() > 1e-3 # something to compare
    # measured: 2e-11 (images), 2e-11 (critic scores): float64 rounding after 8 steps
    assert (o2['fake'] - o1['fake']).abs().max() < 1e-8
    assert all((s2 - s1).abs().max() < 1e-8 for s2, s1 in zip(o2['scores'], o1['scores']))
    w2, w1 = (torch.load(runs[k]/'weights_rank0.pt') for k in ('two', 'one'))
    # measured: at most 3.5e-9, in biases right before a batch norm, whose gradient is exactly 0 in exact arithmetic,
    # so Adam moves them by lr * (rounding noise) / eps, and in the running means those biases shift
    worst = max((w2[k] - w1[k]).abs().max().item() for k in w1 if w1[k].is_floating_point())
    assert worst < 1e-7, worst

@pytest.fixture(scope='module')
def land(tmp_path_factory):
    from gaugan_fastai.formats import make_landcover_demo
    d = tmp_path_factory.mktemp('cli_distributed')
    make_landcover_demo(d/'data', n=12, size=32)
    return d

def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

TINY = ['--size', 32, '--bs', 2, '--ngf', 4, '--ndf', 8, '--no-vgg', '--precision', 'fp32', '--workers', 0, '--device', 'cpu']

def test_gaugan_train_under_torchrun_then_resumed_under_accelerate(land):
    "Two epochs under torchrun; epoch 1's checkpoint removed (a kill during epoch 1); resumed under accelerate launch."
    p = launch(*TWO, '--no-python', 'gaugan-train', 'data', '--epochs', 2, '--out', 'model.pth', *TINY, cwd=land)
    first = p.stdout.splitlines()[0]
    assert first.startswith('Training spade on 10 samples') and 'batch 2 per process x 2 processes = 4' in first, p.stdout
    assert p.stdout.count('Training spade') == 1 and p.stdout.count('Model written to model.pth') == 1 # printed once
    ckpts = land/'checkpoints'
    assert sorted(f.name for f in ckpts.glob('*.pth')) == ['gaugan_0.pth', 'gaugan_1.pth']
    os.replace(ckpts/'gaugan_1.pth', land/'uninterrupted_1.pth')
    p = launch(BIN/'accelerate', 'launch', '--multi_gpu', '--num_processes', 2, '--main_process_port', free_port(),
               BIN/'gaugan-train', 'data', '--epochs', 2, '--resume', '--out', 'resumed.pth', *TINY, cwd=land)
    assert 'batch 2 per process x 2 processes = 4' in p.stdout and 'epochs 2..2' in p.stdout, p.stdout
    assert sorted(f.name for f in ckpts.glob('*.pth')) == ['gaugan_0.pth', 'gaugan_1.pth']
    from gaugan_fastai.checkpoints import load_checkpoint
    full, resumed = load_checkpoint(land/'uninterrupted_1.pth'), load_checkpoint(ckpts/'gaugan_1.pth')
    # one set of random states per process, and they differ (each process its own crops, flips and noise)
    assert len(full['rng']) == 2 and not torch.equal(full['rng'][0]['torch'], full['rng'][1]['torch'])
    # each process restored its own states, so the resumed epoch is the uninterrupted one, bit for bit (measured: 0.0;
    # restoring rank 0's states on both processes made weights differ by 0.14)
    for k, v in full['model'].items(): assert torch.equal(v, resumed['model'][k]), k
    for r in range(2): assert torch.equal(full['rng'][r]['torch'], resumed['rng'][r]['torch'])
    from gaugan_fastai.inference import load_synthesizer
    assert load_synthesizer(land/'resumed.pth', 'cpu').size == (32, 32)

def test_resume_on_another_number_of_processes_says_what_changes(land):
    "A run of two processes, resumed on one (fewer machines free), goes on and says that its batches and random states change."
    launch(*TWO, '--no-python', BIN/'gaugan-train', 'data', '--epochs', 2, '--checkpoints', 'elastic', '--out', 'two.pth', *TINY, cwd=land)
    (land/'elastic'/'gaugan_1.pth').unlink()  # killed during epoch 1
    p = launch(BIN/'gaugan-train', 'data', '--epochs', 2, '--resume', '--checkpoints', 'elastic', '--out', 'one.pth', *TINY, cwd=land)
    assert ("The checkpoint was written by 2 processes and this run has 1: it goes on with batches of 1 x 2 instead of "
            "2 x 2, and the random states of processes 1..1 are not used") in p.stdout, p.stdout
    assert 'epochs 2..2' in p.stdout and (land/'one.pth').is_file()

NOTEBOOK = """
import os, sys, torch
from accelerate import notebook_launcher
from gaugan_fastai.formats import data_loaders
from gaugan_fastai.learner import gaugan_learner
import gaugan_fastai.distributed

def train(folder, steps, ema):
    learn = gaugan_learner(data_loaders(folder, size=32, bs=2, num_workers=0, device='cpu'), ngf=4, ndf=8, z_dim=8,
                           vgg=False, n_layers_D=2, checkpoint=None, steps=steps, ema=None if ema == 'none' else float(ema))
    start = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with learn.distrib_ctx(), learn.no_logging(), learn.no_bar(): learn.fit(1, 1e-3)
    torch.save({'weights': learn.model.state_dict(), 'start': start, 'steps': learn.train_iter}, f'{steps}/weights_rank{os.environ["RANK"]}.pt')

for scheme in sys.argv[2:]:  # steps:ema, one launch after the other from this process, as from a notebook
    steps, ema = scheme.split(':')
    os.makedirs(steps)
    notebook_launcher(train, args=(sys.argv[1], steps, ema), num_processes=2)
"""

@pytest.fixture(scope='module')
def launched(land):
    "A folder per training scheme, each trained by `notebook_launcher` on 2 processes; one Python process launches all three."
    (land/'nb').mkdir()
    launch(sys.executable, '-c', NOTEBOOK, land/'data', 'alternate:none', 'paired_reuse:0.9', 'critic_first:0.9', cwd=land/'nb')
    return land/'nb'

def test_notebook_launcher_trains_on_two_processes(launched):
    "What the notebook section 'A notebook' shows: a function forked into 2 processes, trained inside `distrib_ctx`."
    r0, r1 = (torch.load(launched/'alternate'/f'weights_rank{r}.pt') for r in (0, 1))
    assert r0['steps'] == r1['steps'] == 2, (r0['steps'], r1['steps']) # 10 training tiles: 5 per process, 2 full batches of 2
    w0, w1 = r0['weights'], r1['weights']
    assert not [k for k in w0 if not torch.equal(w0[k], w1[k])]

@pytest.mark.parametrize('steps', ['paired_reuse', 'critic_first'])
def test_paired_steps_and_weight_average_on_two_processes(launched, steps):
    "Training schemes under DDP: both networks stepped on each batch, sharing one generator pass, and an EMA of the generator."
    r0, r1 = (torch.load(launched/steps/f'weights_rank{r}.pt') for r in (0, 1))
    assert r0['steps'] == r1['steps'] == 4, (r0['steps'], r1['steps']) # 2 batches per process, each trains both networks
    w0, w1 = r0['weights'], r1['weights']
    assert not [k for k in w0 if not torch.equal(w0[k], w1[k])] # the ranks agree, the average's weights included
    assert [k for k in w0 if k.startswith('generator.') and k.endswith(('weight', 'bias', 'weight_orig'))
            and not torch.equal(w0[k], r0['start'][k])] # the generator trained (not only its batch-norm statistics)
    gen = {k.removeprefix('generator.'): v for k, v in w0.items() if k.startswith('generator.')}
    avg = {k.removeprefix('average.module.'): v for k, v in w0.items() if k.startswith('average.module.')}
    assert avg.keys() == gen.keys() and any(not torch.equal(avg[k], gen[k]) for k in gen if gen[k].is_floating_point())
