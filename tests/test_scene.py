"""Whole scenes (`gaugan_fastai.scene`) where a notebook cannot check them: peak memory of a large scene, measured in a
subprocess, and the command line on a label GeoTIFF whose size is not a multiple of the tile size.

The model is an untrained pix2pix U-Net of width 4 on 64 x 64 tiles: memory and the writing path do not depend on
what the model learned, and a small network keeps the 4,100 x 4,103 scene (7,396 tiles) cheap; the test prints its
time."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window
from gaugan_fastai.formats import make_landcover_demo, SpadeDataLoaders, LANDCOVER_NODATA
from gaugan_fastai.learner import gaugan_learner
from gaugan_fastai.inference import load_synthesizer
from gaugan_fastai.scene import generate_scene_command

BIN = Path(sys.executable).parent
# Peak resident memory a scene may add to the process, whatever its size. Streaming needs one band of rows
# (3 floats + 1 float + 1 bool per pixel, a tile and a batch's rows deep: under 10 MB at 4,100 pixels wide), one label
# strip, one batch of tiles, and GDAL's block cache, capped at `GDAL_CACHE_MB` (64 MB). Holding the scene instead would
# take at least 4,100 x 4,103 x 16 bytes = 269 MB of float sums, plus 50 MB of output bytes.
LIMIT_MB = 100

def write_label_raster(fn, height, width, tiles, seed=0):
    "A label GeoTIFF made of the 64 x 64 demo label `tiles` in random order, with a nodata corner, written strip by strip."
    rng = np.random.default_rng(seed)
    profile = dict(driver='GTiff', width=width, height=height, count=1, dtype='uint8', crs='EPSG:26918',
                   nodata=LANDCOVER_NODATA, transform=from_origin(360000, 4300000, 1, 1), tiled=True, blockxsize=256,
                   blockysize=256, compress='deflate')
    with rasterio.open(fn, 'w', **profile) as dst:
        for y in range(0, height, 64):
            row = np.concatenate([tiles[i] for i in rng.integers(0, len(tiles), width // 64 + 1)], 1)[:, :width]
            if y < height // 4: row[:, :width // 4] = LANDCOVER_NODATA
            dst.write(row[None, :min(64, height - y)], window=Window(0, y, width, min(64, height - y)))
    return fn

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A folder with `model.pth` (untrained pix2pix, 64 x 64, with the demo set's label reader) and demo label tiles."
    d = tmp_path_factory.mktemp('scene')
    demo = make_landcover_demo(d/'demo', n=16, size=64, seed=0)
    dls = SpadeDataLoaders.from_arcgis(demo, size=64, bs=4, num_workers=0, seed=0, device='cpu')
    learn = gaugan_learner(dls, arch='pix2pix', ngf=4, ndf=4, vgg=False, checkpoint=None, path=d)
    learn.export_synthesizer(d/'model.pth')
    tiles = []
    for f in sorted((demo/'labels').glob('*.tif')):
        with rasterio.open(f) as src: tiles.append(src.read(1))
    return d, tiles

CHILD = """
import json, resource, sys, time
import numpy as np, rasterio
from rasterio.transform import from_origin
from gaugan_fastai.core import skip_collection_at_exit
from gaugan_fastai.inference import load_synthesizer
import gaugan_fastai.scene
skip_collection_at_exit()
model, labels, out = sys.argv[1:]
synth = load_synthesizer(model, 'cpu')
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
with rasterio.open(out + '.warm.tif', 'w', driver='GTiff', width=100, height=100, count=1, dtype='uint8',
                   crs='EPSG:26918', transform=from_origin(0, 0, 1, 1)) as dst: dst.write(np.full((1, 100, 100), 2, np.uint8))
synth.generate_scene(out + '.warm.tif', out + '.warm_out.tif', seed=0, show_progress=False)  # load kernels, drivers
before, t = peak(), time.perf_counter()
res = synth.generate_scene(labels, out, seed=0, show_progress=False)
print(json.dumps({'before_mb': before, 'after_mb': peak(), 'seconds': time.perf_counter() - t, 'tiles': res['tiles']}))
"""

def test_peak_memory_of_a_large_scene_is_bounded(work):
    d, tiles = work
    labels = write_label_raster(d/'large.tif', 4100, 4103, tiles)
    p = subprocess.run([sys.executable, '-c', CHILD, str(d/'model.pth'), str(labels), str(d/'large_out.tif')],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    added = res['after_mb'] - res['before_mb']
    print(f"\n4100 x 4103 scene: {res['tiles']} tiles in {res['seconds']:.1f} s, peak memory +{added:.0f} MB "
          f"over {res['before_mb']:.0f} MB (limit +{LIMIT_MB} MB)")
    assert added < LIMIT_MB, res
    with rasterio.open(labels) as lab, rasterio.open(d/'large_out.tif') as gen:
        assert (gen.crs, gen.transform, gen.shape) == (lab.crs, lab.transform, lab.shape)
        corner = Window(0, 0, 1025, 1025)  # the nodata corner is 1,025 x 1,025
        assert (gen.read_masks(1, window=corner) == 0).all() and (gen.read(window=corner) == 0).all()
        assert (gen.read_masks(1, window=Window(2000, 2000, 500, 500)) == 255).all()

def test_scene_command_on_a_raster_that_is_no_multiple_of_the_tile(work, tmp_path, capsys):
    d, tiles = work
    labels = write_label_raster(tmp_path/'odd.tif', 197, 301, tiles, seed=1)
    synth = load_synthesizer(d/'model.pth', 'cpu')
    res = generate_scene_command(synth, [labels], tmp_path/'out', seed=0, show_progress=False)
    assert res['path'] == tmp_path/'out'/'odd.tif' and res['size'] == (197, 301)
    with rasterio.open(labels) as lab, rasterio.open(res['path']) as gen:
        assert (gen.crs, gen.transform, gen.shape, gen.count) == (lab.crs, lab.transform, lab.shape, 3)
        assert np.array_equal(gen.dataset_mask() == 0, lab.read(1) == LANDCOVER_NODATA)
    assert f"{tmp_path/'out'/'odd.tif'}: 301 x 197 pixels" in capsys.readouterr().out

def test_gaugan_generate_scene_subprocess(work, tmp_path):
    "Through the console script, as a user runs it."
    d, tiles = work
    labels = write_label_raster(tmp_path/'odd.tif', 197, 301, tiles, seed=1)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.run([str(BIN/'gaugan-generate'), str(d/'model.pth'), str(labels), '--scene', '--out',
                        str(tmp_path/'scene.tif'), '--seed', '0', '--device', 'cpu'],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    with rasterio.open(labels) as lab, rasterio.open(tmp_path/'scene.tif') as gen:
        assert (gen.crs, gen.transform, gen.shape) == (lab.crs, lab.transform, lab.shape)
