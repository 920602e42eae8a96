"""Property-based tests of the readers and loaders (hypothesis): random label arrays, sample types, sizes, value sets,
nodata, colour maps and mismatched pairs. Each case must give either the right result, computed here independently
from the arrays written, or a `ValueError` whose message names the file: never a silently wrong batch, never an
exception from deep inside torch. The number of examples is bounded so that the file runs in tens of seconds."""
import tempfile, warnings
from pathlib import Path
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from hypothesis import given, settings, assume, HealthCheck, strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from gaugan_fastai.data import LabelReader, ImageReader, Sample, SpadeDataLoaders, dataset_value_range, IGNORE_INDEX
from gaugan_fastai.formats import SpadeDataLoaders  # with the format factories (from_folders) patched on

warnings.filterwarnings('ignore', category=NotGeoreferencedWarning)
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRID = from_origin(500000, 4000000, 1, 1)  # a 1 m grid in UTM zone 18N

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    "The folder of this file's examples; each example writes into its own `fresh` subfolder."
    return tmp_path_factory.mktemp('inputs')

def fresh(root:Path)->Path:
    "A new empty folder under `root` (hypothesis runs many examples in one test call)."
    return Path(tempfile.mkdtemp(dir=root))

def write_tif(fn, arr, nodata=None, crs=None, transform=None):
    "A GeoTIFF of `arr` ([H,W] or [H,W,C]), with georeference when `crs` is given."
    arr = arr[..., None] if arr.ndim == 2 else arr
    h, w, c = arr.shape
    geo = dict(crs=crs, transform=transform) if crs is not None else {}
    with rasterio.open(fn, 'w', driver='GTiff', height=h, width=w, count=c, dtype=arr.dtype, nodata=nodata, **geo) as dst:
        dst.write(np.moveaxis(arr, -1, 0))
    return fn

def write(fn, arr, nodata=None):
    "`arr` as PNG (8- or 16-bit) or GeoTIFF, by `fn`'s suffix."
    if fn.suffix == '.png': Image.fromarray(arr).save(fn)
    else: write_tif(fn, arr, nodata)
    return fn

# ---------------------------------------------------------------------------------------------------------- labels
INT_TYPES = {np.uint8: (0, 255), np.uint16: (0, 65535), np.int16: (-32768, 32767), np.int32: (-2**31, 2**31 - 1),
             np.float32: (-10**6, 10**6)}

@st.composite
def label_cases(draw):
    "A label array, its file type, the class and ignore values, an optional nodata value."
    dtype = draw(st.sampled_from(list(INT_TYPES)))
    suffix = draw(st.sampled_from(['.tif', '.png'] if dtype in (np.uint8, np.uint16) else ['.tif']))
    lo, hi = INT_TYPES[dtype]
    pool = draw(st.lists(st.integers(lo, hi), min_size=2, max_size=7, unique=True))
    n_cls = draw(st.integers(1, len(pool) - 1))
    values, rest = pool[:n_cls], pool[n_cls:]
    ignore = rest[:draw(st.integers(0, len(rest)))]
    nodata = draw(st.sampled_from([None] + rest)) if suffix == '.tif' else None
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    arr = draw(hnp.arrays(dtype, (h, w), elements=st.sampled_from(pool))).astype(dtype)
    return arr, suffix, values, ignore, nodata

@FEW
@given(case=label_cases(), unknown=st.sampled_from(['error', 'ignore']))
def test_label_values(folder, case, unknown):
    "Every stored value becomes its class id, dontcare (ignore values, nodata), or an error naming the file and values."
    arr, suffix, values, ignore, nodata = case
    fn = write(fresh(folder)/f'label{suffix}', arr, nodata)
    ids = {v: i for i, v in enumerate(values)} | {v: IGNORE_INDEX for v in ignore + ([nodata] if nodata is not None else [])}
    strangers = sorted({int(v) for v in np.unique(arr)} - set(ids))
    reader = LabelReader(values, ignore, unknown)
    if strangers and unknown == 'error':
        with pytest.raises(ValueError, match=str(fn)) as e: reader(fn)
        assert f'label values {strangers[:10]}' in str(e.value)
        return
    got = np.asarray(reader(fn))
    want = np.vectorize(lambda v: ids.get(int(v), IGNORE_INDEX), otypes=[np.uint8])(arr)
    np.testing.assert_array_equal(got, want)

@FEW
@given(h=st.integers(1, 6), w=st.integers(1, 6), frac=st.floats(0.01, 0.99), nan=st.booleans())
def test_label_fractions(folder, h, w, frac, nan):
    "Float label rasters with non-whole or non-finite values (not nodata) are refused, naming the file and a value."
    arr = np.zeros((h, w), np.float32)
    arr[-1, -1] = np.nan if nan else 1 + frac
    fn = write_tif(fresh(folder)/'label.tif', arr)
    with pytest.raises(ValueError, match=rf"{fn}: label values must be whole numbers"): LabelReader([0, 1])(fn)

# ---------------------------------------------------------------------------------------------------------- photos
@st.composite
def photo_cases(draw):
    "A photo array of any sample type, its file type, an optional nodata value and non-finite pixels."
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64]))
    bands = draw(st.sampled_from([1, 3, 4]))
    suffix = draw(st.sampled_from(['.tif', '.png'] if (dtype, bands) in ((np.uint8, 3), (np.uint8, 1), (np.uint16, 1))
                                  else ['.tif']))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    if dtype in (np.float32, np.float64): elements = st.floats(-1e4, 1e4, width=32)
    else: info = np.iinfo(dtype); elements = st.integers(int(info.min), int(info.max))
    arr = draw(hnp.arrays(dtype, (h, w) if bands == 1 else (h, w, bands), elements=elements))
    nodata, valid = None, np.ones(arr.shape, bool)
    if suffix == '.tif' and dtype != np.uint8 and draw(st.booleans()):  # some pixels hold the nodata value
        nodata = -9999 if dtype != np.uint16 else 65535
        arr[draw(hnp.arrays(bool, (h, w)))] = nodata
        valid = arr != nodata  # the holes, and any drawn value that happens to equal nodata: nodata too
    if dtype in (np.float32, np.float64) and draw(st.booleans()):  # and some are not finite
        bad = draw(hnp.arrays(bool, arr.shape))
        arr[bad] = draw(st.sampled_from([np.nan, np.inf, -np.inf])); valid[bad] = False
    return arr, suffix, nodata, valid

def expected_rgb(arr, valid, lo, hi):
    "What scaling [lo, hi] to [0, 255] gives, invalid pixels black, as the first three bands (grey -> RGB)."
    x = np.clip((arr.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255
    x = np.where(valid, np.round(x), 0)
    x = x[..., None] if x.ndim == 2 else x
    return np.repeat(x, 3, -1) if x.shape[-1] == 1 else x[..., :3]

@FEW
@given(case=photo_cases())
def test_photo_scaling(folder, case):
    "A photo of any bit depth is scaled from the range of its valid values: nothing clipped, nodata and NaN left out."
    arr, suffix, nodata, valid = case
    fn = write(fresh(folder)/f'photo{suffix}', arr, nodata)
    color_valid = (valid[..., None] if valid.ndim == 2 else valid[..., :3])
    color_arr = arr[..., None] if arr.ndim == 2 else arr[..., :3]
    reader = ImageReader()
    if arr.dtype == np.uint8:
        assert dataset_value_range([fn], reader) is None
        np.testing.assert_array_equal(np.asarray(reader(fn)), expected_rgb(arr, valid, 0, 255))
        return
    if not color_valid.any():
        with pytest.raises(ValueError, match='has a valid pixel'): dataset_value_range([fn], reader)
        return
    lo, hi = dataset_value_range([fn], reader)
    vals = color_arr[color_valid].astype(np.float64)
    assert (lo, hi) == (vals.min(), vals.max() if vals.max() > vals.min() else vals.min() + 1)
    got = np.asarray(ImageReader(value_range=(lo, hi))(fn)).astype(int)
    want = expected_rgb(arr, valid, lo, hi)
    assert np.abs(got - want).max() <= 1  # float32 arithmetic in the reader: at most one step of rounding apart
    if vals.max() > vals.min():  # the darkest valid value is black, the brightest white: the range was not clipped
        assert got[color_valid.repeat(3 // color_valid.shape[-1], -1) & (want == 255)].min() >= 254

# ---------------------------------------------------------------------------------------------------------- colour maps
@st.composite
def colour_cases(draw):
    "A palette, a colour label map of its colours, and some pixels of colours off the palette."
    palette = np.array(draw(st.lists(st.tuples(*[st.integers(0, 255)] * 3), min_size=1, max_size=6, unique=True)), np.uint8)
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    idx = draw(hnp.arrays(np.uint8, (h, w), elements=st.integers(0, len(palette) - 1)))
    img = palette[idx]
    off = draw(hnp.arrays(bool, (h, w)))
    strange = draw(st.tuples(*[st.integers(0, 255)] * 3))
    assume(not (palette == np.array(strange, np.uint8)).all(1).any() or not off.any())
    img[off] = strange
    return palette, idx, img, off

@FEW
@given(case=colour_cases())
def test_colour_maps(folder, case):
    "Colours off the palette are an error that counts them, unless a tolerance lets them take the nearest colour."
    palette, idx, img, off = case
    fn = fresh(folder)/'label.png'
    Image.fromarray(img).save(fn)
    if off.any():
        with pytest.raises(ValueError, match=rf"{fn}: {off.sum()} pixels .* have colours not in the palette"):
            LabelReader(colors=palette)(fn)
        nearest = np.sqrt(((img[off][0].astype(float) - palette) ** 2).sum(1)).argmin()
        got = np.asarray(LabelReader(colors=palette, color_tolerance=500)(fn))
        np.testing.assert_array_equal(got[~off], idx[~off])
        assert (got[off] == nearest).all()
    else: np.testing.assert_array_equal(np.asarray(LabelReader(colors=palette)(fn)), idx)

# ---------------------------------------------------------------------------------------------------------- pairs and loaders
@st.composite
def pair_cases(draw):
    "A GeoTIFF label/photo pair that may differ in size, CRS or origin."
    h, w = draw(st.integers(4, 12)), draw(st.integers(4, 12))
    fault = draw(st.sampled_from(['none', 'size', 'crs', 'origin', 'photo without georeference']))
    shift = draw(st.integers(1, 50))
    return h, w, fault, shift

@FEW
@given(case=pair_cases(), check=st.booleans())
def test_mismatched_pairs(folder, case, check):
    "A label and photo that disagree in size (always), or in georeference (unless check_georef=False), are refused naming both."
    h, w, fault, shift = case
    d = fresh(folder)
    label = write_tif(d/'a_label.tif', np.ones((h, w), np.uint8), crs=CRS.from_epsg(32618), transform=GRID)
    ph, crs, tfm = (h + 1, w) if fault == 'size' else (h, w), CRS.from_epsg(32618), GRID
    if fault == 'crs': crs = CRS.from_epsg(32617)
    if fault == 'origin': tfm = from_origin(500000 + shift, 4000000, 1, 1)
    if fault == 'photo without georeference': crs = None
    photo = write_tif(d/'a_photo.tif', np.zeros((*ph, 3), np.uint8), crs=crs, transform=tfm)
    build = lambda: SpadeDataLoaders.from_samples([Sample(label, photo)] * 2, ['one'], LabelReader([1]), size=4, bs=1,
                                                  valid_pct=0.5, seed=0, num_workers=0, device='cpu', check_georef=check)
    if fault == 'size' or (fault != 'none' and check):
        with pytest.raises(ValueError, match='mismatch') as e: build()
        assert str(label) in str(e.value) and str(photo) in str(e.value)
    else: build()

@st.composite
def folder_sets(draw):
    "A folder data set: labels of random values, 16-bit or float photos, some labels holding an unknown value."
    n = draw(st.integers(2, 5))
    values = draw(st.lists(st.integers(0, 300), min_size=1, max_size=4, unique=True))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32]))
    side = draw(st.integers(4, 8))
    labels = [draw(hnp.arrays(np.uint16, (side, side), elements=st.sampled_from(values))) for _ in range(n)]
    photos = [draw(hnp.arrays(dtype, (side, side, 3), elements=st.integers(0, 255 if dtype == np.uint8 else 4000)))
              for _ in range(n)]
    stranger = draw(st.sampled_from([None] + list(range(n))))
    return values, labels, photos, stranger

@FEW
@given(case=folder_sets(), with_codes=st.booleans())
def test_folder_loader(folder, case, with_codes):
    "`from_folders` (with `values` alone, or with `codes` too) gives batches of the right ids and scaled photos, or names the file."
    values, labels, photos, stranger = case
    d = fresh(folder)
    (d/'labels').mkdir(); (d/'images').mkdir()
    for i, (lab, ph) in enumerate(zip(labels, photos)):
        if i == stranger: lab[0, 0] = 301
        write_tif(d/'labels'/f'{i}.tif', lab); write_tif(d/'images'/f'{i}.tif', ph)
    codes = [f'c{v}' for v in values] if with_codes else None
    side = labels[0].shape[0]
    try: dls = SpadeDataLoaders.from_folders(d, codes=codes, values=values, size=side, load_size=side, flip=False, bs=1,
                                             valid_pct=0., seed=0, num_workers=0, device='cpu')
    except ValueError as e:  # fastai reads the first sample while it sets up the pipeline
        assert stranger is not None and f"{d/'labels'/f'{stranger}.tif'}: label values [301]" in str(e), e
        return
    assert dls.codes == (codes or [f'class{v}' for v in values])
    ids = {v: i for i, v in enumerate(values)}
    if photos[0].dtype != np.uint8:
        everything = np.stack(photos).astype(np.float64)
        lo, hi = everything.min(), everything.max()
        hi = hi if hi > lo else lo + 1
    for i, item in enumerate(dls.train_ds.items):
        k = int(item.label.stem)
        if k == stranger:
            with pytest.raises(ValueError, match=rf"{item.label}: label values \[301\]"): dls.train_ds[i]
            continue
        lab, photo = dls.train_ds[i]
        np.testing.assert_array_equal(np.asarray(lab), np.vectorize(ids.get, otypes=[np.uint8])(labels[k]))
        want = photos[k] if photos[k].dtype == np.uint8 else expected_rgb(photos[k], np.ones_like(photos[k], bool), lo, hi)
        assert np.abs(np.asarray(photo).astype(int) - want).max() <= 1
    if stranger is None:
        x, y = dls.one_batch()
        assert x.shape[-2:] == (side, side) and y.shape[-2:] == (side, side)
