"""The installed console scripts, run as a user runs them: subprocesses on a tiny generated land-cover set.

Everything is tiny (12 tiles of 32x32 pixels, networks of width 8, one or two epochs) so that the whole file runs in
well under two minutes on two CPU cores. Most bad input is checked in-process through the commands' functions (they
raise `CliError`), which is faster; two subprocesses check the exit status and the message without a traceback.
NVIDIA's runs are generated from and converted in-process too (each subprocess pays seconds of importing fastai),
but for one `gaugan-convert` run as a user runs it."""
import json, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
import pytest
import rasterio, torch
from PIL import Image
from fastcore.script import CliError
from gaugan_fastai.data import read_georef
from gaugan_fastai.formats import make_landcover_demo, data_loaders, LANDCOVER_CLASSES
from gaugan_fastai.inference import load_synthesizer
from gaugan_fastai.layers import SPADE
from gaugan_fastai.metrics import train_segmenter
from gaugan_fastai.cli import gaugan_train, gaugan_generate, gaugan_evaluate, gaugan_convert

BIN = Path(sys.executable).parent
TINY = ['--size', '32', '--bs', '4', '--ngf', '8', '--ndf', '8', '--no-vgg', '--workers', '0', '--device', 'cpu']

def run(command, *args, cwd, ok=True):
    "Run the console script `command`; check it succeeded (or failed, with `ok=False`); return the finished process."
    exe = BIN/command
    assert exe.exists(), f"{exe} is not installed: run `pip install -e .` in the environment"
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
    p = subprocess.run([str(exe), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok: assert p.returncode == 0, f"{command} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    else: assert p.returncode != 0, f"{command} should have failed:\n{p.stdout}\n{p.stderr}"
    return p

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A folder holding `data` (the tiny land-cover set) and `model.pth` trained on it for two epochs by gaugan-train."
    d = tmp_path_factory.mktemp('cli')
    make_landcover_demo(d/'data', n=12, size=32)
    p = run('gaugan-train', 'data', '--epochs', '2', '--out', 'model.pth', *TINY, cwd=d)
    assert 'arcgis layout' in p.stdout, p.stdout  # the layout was recognised without --format
    return d

@pytest.fixture(scope='module')
def segmenter(work):
    "A segmenter file for the tiny set, trained for one epoch in-process (gaugan-evaluate's default trains 30)."
    dls = data_loaders(work/'data', size=32, bs=4, seed=0, num_workers=0, device='cpu')
    return train_segmenter(dls, epochs=1, path=work/'seg.pth')

def test_train_writes_model_and_checkpoint(work):
    synth = load_synthesizer(work/'model.pth', 'cpu')
    assert synth.size == (32, 32) and synth.codes == LANDCOVER_CLASSES
    assert (work/'checkpoints'/'gaugan_0.pth').is_file()

def test_train_with_paired_reuse_steps_weight_average_and_narrow_spade(work, tmp_path, capsys):
    "--steps, --ema and --spade-hidden reach the learner: the exported model holds the average, updated once per generator step, and rebuilds with SPADE's narrower hidden convs."
    gaugan_train(str(work/'data'), epochs=1, steps='paired_reuse', ema=0.9, spade_hidden=16, out=str(tmp_path/'ema.pth'),
                 checkpoints=str(tmp_path/'checkpoints'), size=32, bs=4, ngf=8, ndf=8, vgg=False, workers=0, device='cpu')
    assert 'paired_reuse steps, EMA decay 0.9' in capsys.readouterr().out
    batches = len(data_loaders(work/'data', size=32, bs=4, seed=0, num_workers=0, device='cpu').train)
    synth = load_synthesizer(tmp_path/'ema.pth', 'cpu')
    assert synth.ema == dict(decay=0.9, warmup=True, updates=batches)
    assert {m.mlp_shared[0].out_channels for m in synth.generator.modules() if isinstance(m, SPADE)} == {16}

def _weights(fn): return torch.load(fn, map_location='cpu', weights_only=False)['model']

def test_resume_continues_from_the_newest_checkpoint(work):
    "A run killed during its second epoch (its checkpoint removed, as the kill would have left it) resumes from epoch 0's."
    epoch0 = _weights(work/'checkpoints'/'gaugan_0.pth')
    (work/'checkpoints'/'gaugan_1.pth').unlink()
    p = run('gaugan-train', 'data', '--epochs', '2', '--resume', '--out', 'resumed.pth', *TINY, cwd=work)
    assert 'epochs 2..2' in p.stdout, p.stdout
    assert (work/'checkpoints'/'gaugan_1.pth').is_file() and (work/'resumed.pth').is_file()
    after = _weights(work/'checkpoints'/'gaugan_0.pth')  # epoch 0 was skipped, not trained again
    assert all(torch.equal(epoch0[k], after[k]) for k in epoch0)
    epoch1 = _weights(work/'checkpoints'/'gaugan_1.pth')  # and epoch 1 trained on from it
    assert not all(torch.equal(epoch0[k], epoch1[k]) for k in epoch0 if k.startswith('generator'))

def test_generate_geotiff_and_png(work):
    labels = sorted((work/'data'/'labels').glob('*.tif'))[:2]
    lab = Image.fromarray(np.kron(np.array([[1, 2], [3, 6]], np.uint8), np.ones((24, 20), np.uint8)))
    lab.save(work/'plain.png')  # the data set's label values in a PNG, 48x40: read with its reader, resized
    p = run('gaugan-generate', 'model.pth', *labels, 'plain.png', '--n', '2', '--seed', '1', '--out', 'gen', cwd=work)
    files = sorted((work/'gen').iterdir())
    assert [f.name for f in files] == ['000000000_0.tif', '000000000_1.tif', '000000001_0.tif', '000000001_1.tif',
                                       'plain_0.png', 'plain_1.png'], p.stdout
    assert "plain.png: 48x40 label map resized to the model's 32x32" in p.stdout
    for f, tile in zip(files[:4:2], labels):
        with rasterio.open(f) as src: assert (src.count, src.height, src.width) == (3, 32, 32)
        assert read_georef(f) == read_georef(tile)  # the image lies on the label tile's ground
    assert Image.open(files[4]).size == (32, 32) and Image.open(files[4]).mode == 'RGB'
    a, b = (np.asarray(Image.open(f)) for f in files[4:])
    assert not np.array_equal(a, b)  # two style codes, two images

def test_generate_with_style_and_seed_is_reproducible(work):
    "In-process (the command's function): the same seed and style photo give the same image; another photo another."
    label = work/'data'/'labels'/'000000003.tif'
    files = [gaugan_generate(work/'model.pth', [label], style=work/'data'/'images'/f'00000000{i}.tif', seed=0,
                             out=work/out, device='cpu')[0] for i, out in ((4, 's1'), (4, 's2'), (5, 's3'))]
    a, b, c = (rasterio.open(f).read() for f in files)
    assert np.array_equal(a, b) and not np.array_equal(a, c)

def test_bench_prints_plain_fast_and_ratios(tmp_path):
    p = run('gaugan-bench', '--size', '32', '--bs', '2', '--ngf', '8', '--no-vgg', '--no-vae', '--iters', '1', '--warmup', '1',
            '--device', 'cpu', cwd=tmp_path)
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 3, p.stdout
    plain, fast, ratios = map(json.loads, lines)
    assert (plain['path'], fast['path']) == ('plain', 'fast') and plain['precision'] == 'fp32' and fast['fast_generation']
    for res in (plain, fast):
        assert res['size'] == 32 and res['bs'] == 2 and res['device'] == 'cpu'
        assert res['timed_steps'] == {'generator': 1, 'critic': 1}, res
        assert abs(res['train_images_per_s'] * res['train_s_per_iter'] - 2) < 0.02, res  # bs images per iteration
        assert res['train_gflop_per_image'] > 0 and abs(res['train_gflop_per_s'] / (res['train_gflop_per_image'] * res['train_images_per_s']) - 1) < 0.01, res
    assert abs(ratios['train_speedup'] - fast['train_images_per_s'] / plain['train_images_per_s']) < 0.01, ratios
    assert abs(ratios['generate_speedup'] - plain['generate_latency_ms'] / fast['generate_latency_ms']) < 0.01, ratios

def test_evaluate_writes_json(work, segmenter):
    p = run('gaugan-evaluate', 'model.pth', 'data', '--out', 'scores.json', '--segmenter', 'seg.pth', '--bs', '4',
            '--n-diversity', '2', '--workers', '0', '--device', 'cpu', cwd=work)
    res = json.loads((work/'scores.json').read_text())
    assert res['split'] == 'valid' and res['n_images'] == 2  # 20% of 12 tiles, rounded down
    assert res['codes'] == LANDCOVER_CLASSES and res['format'] == 'arcgis'
    assert 'mIoU (generated)' in p.stdout and 'Scores written to scores.json' in p.stdout

def test_unlabeled_pixels_and_other_values(tmp_path):
    "Label value 0 marks unlabeled pixels: without an option the error names the file and the options; --ignore-values and --unknown make them dontcare; gaugan-evaluate then reads the data as the model was trained, without repeating them."
    rng = np.random.default_rng(0)
    for d in ('labels', 'images'): (tmp_path/'data'/d).mkdir(parents=True)
    for i in range(10):
        labels = rng.integers(0, 4, (4, 4)).repeat(8, 0).repeat(8, 1).astype(np.uint8)  # 0: unlabeled; 1, 2, 3: classes
        Image.fromarray(labels).save(tmp_path/'data'/'labels'/f'{i}.png')
        Image.fromarray((labels[..., None] * 60 + rng.integers(0, 20, (32, 32, 3))).astype(np.uint8)).save(tmp_path/'data'/'images'/f'{i}.png')
    codes = ['water', 'forest', 'field']
    tiny = dict(codes=codes, values=[1, 2, 3], epochs=1, size=32, bs=4, ngf=8, ndf=8, vae=False, vgg=False, workers=0, device='cpu')
    with pytest.raises(CliError, match=r"labels/\d\.png: label values \[0\] are not among the class values \[1, 2, 3\].*--ignore-values, --unknown ignore"):
        gaugan_train(str(tmp_path/'data'), out=str(tmp_path/'none.pth'), checkpoints=str(tmp_path/'c0'), **tiny)
    for option, model in ((dict(ignore_values=[0], cache=True), 'ignored.pth'), (dict(unknown='ignore'), 'unknown.pth')):  # --cache: the model still records how labels were read
        gaugan_train(str(tmp_path/'data'), out=str(tmp_path/model), checkpoints=str(tmp_path/model.replace('.pth', '')), **option, **tiny)
    reader = load_synthesizer(tmp_path/'ignored.pth', 'cpu').label_reader
    assert (list(reader.ignore_values), reader.unknown) == ([0], 'error')
    assert load_synthesizer(tmp_path/'unknown.pth', 'cpu').label_reader.unknown == 'ignore'
    dls = data_loaders(tmp_path/'data', codes=codes, values=[1, 2, 3], ignore_values=[0], size=32, bs=4, seed=0, num_workers=0, device='cpu')
    train_segmenter(dls, epochs=1, path=tmp_path/'seg.pth')
    for model in ('ignored.pth', 'unknown.pth'):
        res = gaugan_evaluate(str(tmp_path/model), str(tmp_path/'data'), segmenter=str(tmp_path/'seg.pth'), out=str(tmp_path/'scores.json'),
                              bs=4, n_diversity=2, workers=0, device='cpu')
        assert res['n_images'] == 2 and res['codes'] == codes

def _clear_error(p, *words):
    "A failed command printed no Python traceback, and one line starting with the command's name and `words`."
    assert 'Traceback (most recent call last)' not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for w in words: assert w in lines[0], p.stderr

def test_errors_are_clear_without_traceback(work):
    (work/'notes.txt').write_text('x')
    commands = [('gaugan-train', 'nowhere', *TINY), ('gaugan-generate', 'notes.txt', 'plain.png')]
    with ThreadPoolExecutor(2) as pool:  # both at once: each spends its seconds importing, on one core
        train, generate = pool.map(lambda c: run(*c, cwd=work, ok=False), commands)
    _clear_error(train, 'gaugan-train: error:', 'nowhere does not exist')
    _clear_error(generate, 'gaugan-generate: error:', 'notes.txt is not a model file')

def test_bad_input_in_process(work, tmp_path):
    "The messages of the library's checks, through the commands' Python functions."
    with pytest.raises(CliError, match='gaugan-evaluate: error: .*missing.pth does not exist'):
        gaugan_evaluate(tmp_path/'missing.pth', work/'data')
    with pytest.raises(CliError, match='no known data layout'): gaugan_train(tmp_path)
    (tmp_path/'labels').mkdir(); (tmp_path/'images').mkdir()
    with pytest.raises(CliError, match='name no classes: pass codes'): gaugan_train(tmp_path)
    with pytest.raises(CliError, match='no pix2pix facades'): gaugan_train(work/'data', format='pix2pix_facades')
    label = work/'data'/'labels'/'000000000.tif'
    with pytest.raises(CliError, match=r'label map .*nothing\.png does not exist'):
        gaugan_generate(work/'model.pth', [label, work/'nothing.png'], out=tmp_path/'g', device='cpu')
    assert not (tmp_path/'g').exists()  # checked before anything is generated
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(tmp_path/'nine.png')
    with pytest.raises(CliError, match=r'nine\.png: label values \[9\] are not among the class values'):
        gaugan_generate(work/'model.pth', [label, tmp_path/'nine.png'], out=tmp_path/'g', device='cpu')
    assert not (tmp_path/'g').exists()  # a bad label map after a good one: nothing written
    with pytest.raises(CliError, match='style image .*none.tif does not exist'):
        gaugan_generate(work/'model.pth', [label], style=tmp_path/'none.tif', out=tmp_path/'g', device='cpu')
    (tmp_path/'cmp').mkdir(); (tmp_path/'cmp'/'cmp_b0001.jpg').touch()
    with pytest.raises(CliError, match='codes does not apply to cmp_facades data'): gaugan_train(tmp_path/'cmp', codes=['a'])

# NVIDIA's SPADE runs as models: the reference's own fixture runs when shared/ has them, else a run written here.

def _fixture_runs():
    "Folders of the reference's fixture runs (shared/fixtures/nvlabs-spade), or [] when absent."
    found = next((d/'shared'/'fixtures'/'nvlabs-spade' for d in Path(__file__).resolve().parents
                  if (d/'shared'/'fixtures'/'nvlabs-spade').is_dir()), None)
    return [] if found is None else [found/n for n in ('coco_like', 'cityscapes_like')]  # dontcare, instances, aspect 2

@pytest.fixture(scope='module')
def nvlabs_runs(tmp_path_factory):
    "[(run folder, label file)]: each run with a label file of its classes (values as in the data set's files)."
    from gaugan_fastai.nvlabs import load_nvlabs_run, random_nvlabs_run
    d = tmp_path_factory.mktemp('nvlabs')
    runs = _fixture_runs()
    if not runs:
        print("Reference fixtures (shared/fixtures/nvlabs-spade) not found: using a run written by random_nvlabs_run")
        runs = [random_nvlabs_run(d/'coco_written', 'coco', label_nc=6, crop_size=64, ngf=4, ndf=8)]
    res = []
    for folder in runs:
        run = load_nvlabs_run(folder, critic=False)
        h, w = run.synthesizer('cpu').size
        labels = np.random.default_rng(0).integers(0, len(run.codes), (h, w)).astype(np.uint8)
        if run.dontcare_channel is not None: labels[:, :8] = 255  # unlabeled, as in COCO-Stuff's files
        Image.fromarray(labels).save(d/f'{folder.name}.png')
        res.append((folder, d/f'{folder.name}.png'))
    return res

def test_generate_from_nvlabs_runs_and_converted(nvlabs_runs, tmp_path, capsys):
    "gaugan-generate on a run folder writes images; gaugan-convert's file makes the same ones (in-process but one gaugan-convert)."
    for i, (folder, label) in enumerate(nvlabs_runs):
        out = tmp_path/folder.name
        gaugan_generate(str(folder), [str(label)], n=2, seed=0, device='cpu', out=str(out/'from_run'))
        assert '2 images written' in capsys.readouterr().out
        images = [np.array(Image.open(out/'from_run'/f'{label.stem}_{k}.png')) for k in range(2)]
        assert images[0].shape[:2] == np.array(Image.open(label)).shape and images[0].shape[2] == 3
        if i == 0: stdout = run('gaugan-convert', folder, '--out', out/'converted.pth', cwd=tmp_path).stdout
        else: gaugan_convert(str(folder), out=str(out/'converted.pth')); stdout = capsys.readouterr().out
        assert f"written to {out/'converted.pth'}" in stdout, stdout
        gaugan_generate(str(out/'converted.pth'), [str(label)], n=2, seed=0, device='cpu', out=str(out/'converted'))
        for k in range(2):
            assert np.array_equal(np.array(Image.open(out/'converted'/f'{label.stem}_{k}.png')), images[k])

def test_nvlabs_run_without_options_needs_dataset(nvlabs_runs, tmp_path):
    "A release folder with only weights: a one-line error naming what to pass."
    folder, label = nvlabs_runs[0]
    (tmp_path/'release').mkdir()
    (tmp_path/'release'/'latest_net_G.pth').write_bytes((folder/'latest_net_G.pth').read_bytes())
    with pytest.raises(CliError, match='gaugan-generate: error: .*no opt.txt.*pass dataset='):
        gaugan_generate(str(tmp_path/'release'), [str(label)], device='cpu', out=str(tmp_path/'g'))
